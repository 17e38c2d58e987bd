//! tarpc over QUIC streams, with postcard in length-delimited frames.
//!
//! Each control RPC call runs on its own bidirectional stream: the caller
//! opens an [`StreamKind::Rpc`](crate::StreamKind::Rpc) stream with
//! [`Endpoint::rpc_transport`](crate::Endpoint::rpc_transport), builds a
//! tarpc client on it, makes the call and drops the client, which finishes
//! the stream. Streams are cheap in QUIC, and separate streams keep a slow
//! call from blocking the calls behind it (no head-of-line blocking), which
//! one long-lived multiplexed stream would not.
//!
//! The server side hands each incoming RPC stream to [`serve_tarpc_stream`]
//! with the node's `#[tarpc::service]` implementation.

use std::io;
use std::marker::PhantomData;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use quinn::{RecvStream, SendStream};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tarpc::server::{BaseChannel, Channel, Serve};
use tarpc::{ClientMessage, Response};
use tokio::io::Join;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::error::{CodecDirection, TransportError};

/// Requests of one RPC stream that the server runs at once.
///
/// A client normally sends one request per stream; the bound keeps a client
/// that pipelines many requests on one stream from starting unbounded work.
pub const MAX_CONCURRENT_REQUESTS_PER_STREAM: usize = 16;

/// A tarpc transport over one QUIC stream: `Item` is what is received,
/// `SinkItem` what is sent.
pub type QuicTransport<Item, SinkItem> = tarpc::serde_transport::Transport<
    Join<RecvStream, SendStream>,
    Item,
    SinkItem,
    PostcardCodec<Item, SinkItem>,
>;

/// The client side of an RPC stream for a service with request type `Req`
/// and response type `Resp`.
pub type ClientTransport<Req, Resp> = QuicTransport<Response<Resp>, ClientMessage<Req>>;

/// The server side of an RPC stream.
pub type ServerTransport<Req, Resp> = QuicTransport<ClientMessage<Req>, Response<Resp>>;

/// A tokio-serde codec that encodes `SinkItem` and decodes `Item` with
/// postcard.
///
/// Decoding rejects a frame with bytes left over after the message.
pub struct PostcardCodec<Item, SinkItem> {
    marker: CodecMarker<Item, SinkItem>,
}

/// `fn` pointers keep the codec Send, Sync and Unpin whatever the item types
/// are, since it stores no item.
type CodecMarker<Item, SinkItem> = PhantomData<(fn() -> Item, fn(SinkItem))>;

impl<Item, SinkItem> Default for PostcardCodec<Item, SinkItem> {
    fn default() -> Self {
        Self {
            marker: PhantomData,
        }
    }
}

impl<Item, SinkItem> tokio_serde::Serializer<SinkItem> for PostcardCodec<Item, SinkItem>
where
    SinkItem: Serialize,
{
    type Error = io::Error;

    fn serialize(self: Pin<&mut Self>, item: &SinkItem) -> Result<Bytes, io::Error> {
        postcard::to_stdvec(item)
            .map(Bytes::from)
            .map_err(|source| codec_error(CodecDirection::Encode, source))
    }
}

impl<Item, SinkItem> tokio_serde::Deserializer<Item> for PostcardCodec<Item, SinkItem>
where
    Item: DeserializeOwned,
{
    type Error = io::Error;

    fn deserialize(self: Pin<&mut Self>, src: &BytesMut) -> Result<Item, io::Error> {
        let (item, rest) = postcard::take_from_bytes(src)
            .map_err(|source| codec_error(CodecDirection::Decode, source))?;
        if !rest.is_empty() {
            return Err(codec_error(
                CodecDirection::Decode,
                postcard::Error::DeserializeBadEncoding,
            ));
        }
        Ok(item)
    }
}

fn codec_error(direction: CodecDirection, source: postcard::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        TransportError::Codec {
            direction,
            message_type: "RPC message",
            source,
        },
    )
}

/// Wraps one QUIC stream as a tarpc transport: length-delimited frames (a
/// 4-byte big-endian length, then the bytes) of postcard messages.
///
/// Frames longer than `max_frame_bytes` fail in both directions, and a
/// reader never buffers more than one such frame.
pub fn postcard_transport<Item, SinkItem>(
    send: SendStream,
    recv: RecvStream,
    max_frame_bytes: usize,
) -> QuicTransport<Item, SinkItem>
where
    Item: DeserializeOwned,
    SinkItem: Serialize,
{
    let codec = LengthDelimitedCodec::builder()
        .length_field_type::<u32>()
        .max_frame_length(max_frame_bytes)
        .new_codec();
    let framed = Framed::new(tokio::io::join(recv, send), codec);
    tarpc::serde_transport::new(framed, PostcardCodec::default())
}

/// Serves tarpc requests arriving on one RPC stream with `serve` until the
/// client finishes the stream or the connection closes.
///
/// Requests run concurrently, at most [`MAX_CONCURRENT_REQUESTS_PER_STREAM`]
/// at a time, inside the caller's task. tarpc drops a request whose deadline
/// (set by the client, see
/// [`Endpoint::rpc_context`](crate::Endpoint::rpc_context)) has passed.
pub async fn serve_tarpc_stream<S>(
    send: SendStream,
    recv: RecvStream,
    max_frame_bytes: usize,
    serve: S,
) where
    S: Serve + Clone,
    S::Req: DeserializeOwned,
    S::Resp: Serialize,
{
    let transport: ServerTransport<S::Req, S::Resp> =
        postcard_transport(send, recv, max_frame_bytes);
    BaseChannel::with_defaults(transport)
        .execute(serve)
        .for_each_concurrent(MAX_CONCURRENT_REQUESTS_PER_STREAM, |response| response)
        .await;
}
