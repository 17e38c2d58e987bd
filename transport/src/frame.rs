//! Framing for bulk streams.
//!
//! A bulk stream starts with one header message and continues with chunk
//! frames until the sender finishes the stream:
//!
//! ```text
//! header: length u32 BE | postcard bytes
//! chunk:  index u32 BE | length u32 BE | payload bytes
//! ```
//!
//! Readers pass the largest length they accept, and a length prefix above it
//! fails with [`TransportError::FrameTooLarge`] before anything is allocated,
//! so a peer cannot make the reader allocate more than that.

use bytes::{BufMut, Bytes, BytesMut};
use quinn::{RecvStream, SendStream};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{CodecDirection, TransportError};

/// Size of a chunk frame's prefix: a 4-byte index and a 4-byte length.
const CHUNK_PREFIX_BYTES: usize = 8;

/// Size of a header's length prefix.
const HEADER_PREFIX_BYTES: usize = 4;

/// Writes one chunk frame: `index`, the payload length, then `payload`.
///
/// The payload is handed to quinn without copying.
pub async fn write_chunk_frame(
    send: &mut SendStream,
    index: u32,
    payload: Bytes,
) -> Result<(), TransportError> {
    let Ok(length) = u32::try_from(payload.len()) else {
        return Err(TransportError::FrameTooLarge {
            length_bytes: payload.len() as u64,
            max_bytes: u32::MAX as usize,
        });
    };

    let mut prefix = BytesMut::with_capacity(CHUNK_PREFIX_BYTES);
    prefix.put_u32(index);
    prefix.put_u32(length);
    let mut parts = [prefix.freeze(), payload];
    send.write_all_chunks(&mut parts)
        .await
        .map_err(|source| TransportError::StreamWrite { source })
}

/// Reads the next chunk frame, or returns `None` when the peer finished the
/// stream at a frame boundary.
///
/// Fails with [`TransportError::FrameTooLarge`] when the announced length
/// exceeds `max_len`, and with [`TransportError::StreamClosed`] when the
/// stream ends inside a frame.
pub async fn read_chunk_frame(
    recv: &mut RecvStream,
    max_len: usize,
) -> Result<Option<(u32, Bytes)>, TransportError> {
    let mut prefix = [0u8; CHUNK_PREFIX_BYTES];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(error) => return Err(TransportError::read_exact(error, "chunk frame prefix")),
    }
    let [i0, i1, i2, i3, l0, l1, l2, l3] = prefix;
    let index = u32::from_be_bytes([i0, i1, i2, i3]);
    let length = u32::from_be_bytes([l0, l1, l2, l3]);

    let payload = read_payload(recv, length, max_len, "chunk frame payload").await?;
    Ok(Some((index, payload)))
}

/// Writes `header` as a postcard message with a 4-byte length prefix.
///
/// Fails with [`TransportError::FrameTooLarge`] when the encoding exceeds
/// `max_len`, the same limit the reader should pass to [`read_header`].
pub async fn write_header<T: Serialize>(
    send: &mut SendStream,
    header: &T,
    max_len: usize,
) -> Result<(), TransportError> {
    let encoded = postcard::to_stdvec(header).map_err(|source| TransportError::Codec {
        direction: CodecDirection::Encode,
        message_type: "bulk stream header",
        source,
    })?;
    let length = match u32::try_from(encoded.len()) {
        Ok(length) if encoded.len() <= max_len => length,
        _ => {
            return Err(TransportError::FrameTooLarge {
                length_bytes: encoded.len() as u64,
                max_bytes: max_len,
            })
        }
    };

    let mut parts = [
        Bytes::copy_from_slice(&length.to_be_bytes()),
        Bytes::from(encoded),
    ];
    send.write_all_chunks(&mut parts)
        .await
        .map_err(|source| TransportError::StreamWrite { source })
}

/// Reads a header written by [`write_header`], rejecting one longer than
/// `max_len` bytes or with bytes left over after decoding.
pub async fn read_header<T: DeserializeOwned>(
    recv: &mut RecvStream,
    max_len: usize,
) -> Result<T, TransportError> {
    let mut prefix = [0u8; HEADER_PREFIX_BYTES];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|error| TransportError::read_exact(error, "bulk stream header prefix"))?;
    let length = u32::from_be_bytes(prefix);

    let encoded = read_payload(recv, length, max_len, "bulk stream header").await?;
    let (header, rest) =
        postcard::take_from_bytes(&encoded).map_err(|source| TransportError::Codec {
            direction: CodecDirection::Decode,
            message_type: "bulk stream header",
            source,
        })?;
    if !rest.is_empty() {
        return Err(TransportError::Codec {
            direction: CodecDirection::Decode,
            message_type: "bulk stream header",
            source: postcard::Error::DeserializeBadEncoding,
        });
    }
    Ok(header)
}

/// Reads exactly `length` bytes after checking `length` against `max_len`.
async fn read_payload(
    recv: &mut RecvStream,
    length: u32,
    max_len: usize,
    context: &'static str,
) -> Result<Bytes, TransportError> {
    let too_large = TransportError::FrameTooLarge {
        length_bytes: u64::from(length),
        max_bytes: max_len,
    };
    let Ok(length) = usize::try_from(length) else {
        return Err(too_large);
    };
    if length > max_len {
        return Err(too_large);
    }

    let mut payload = BytesMut::zeroed(length);
    recv.read_exact(&mut payload)
        .await
        .map_err(|error| TransportError::read_exact(error, context))?;
    Ok(payload.freeze())
}
