// A real three-node cluster for the end-to-end run: the node binary's
// `dev` command on 127.0.0.1, with a fresh data directory and free ports.

import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createSocket } from "node:dgram";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = resolve(fileURLToPath(new URL("../..", import.meta.url)));
/** Cargo's target directory, where `.ci/web` builds the node binary. */
export const TARGET_DIR = resolve(REPO, process.env.CARGO_TARGET_DIR ?? "target");
export const NODE_BINARY = join(TARGET_DIR, "debug/dispotify");

/** Distance between a node's HTTP and QUIC ports in `dispotify dev`. */
const QUIC_PORT_OFFSET = 100;

/** Time for the three nodes to start, elect a leader and report ready. */
const READY_TIMEOUT_MS = 90_000;

/** Time the dev command gets to stop its nodes before they are killed. */
const STOP_TIMEOUT_MS = 15_000;

function tcpFree(port: number): Promise<boolean> {
  return new Promise((done) => {
    const server = createServer();
    server.once("error", () => done(false));
    server.listen(port, "127.0.0.1", () => server.close(() => done(true)));
  });
}

function udpFree(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = createSocket("udp4");
    socket.once("error", () => done(false));
    socket.bind(port, "127.0.0.1", () => socket.close(() => done(true)));
  });
}

/** A base port whose HTTP and QUIC ranges for `nodes` nodes are all free. */
async function freePortBase(nodes: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 20_000);
    let free = true;
    for (let i = 0; i < nodes && free; i++) {
      free = (await tcpFree(base + i)) && (await udpFree(base + QUIC_PORT_OFFSET + i));
    }
    if (free) return base;
  }
  throw new Error("no free port range found on 127.0.0.1");
}

async function sleep(ms: number): Promise<void> {
  await new Promise((done) => setTimeout(done, ms));
}

export class TestCluster {
  readonly dataDir: string;
  readonly basePort: number;
  readonly nodes: number;
  private dev: ChildProcess;
  private output = "";

  private constructor(dataDir: string, basePort: number, nodes: number, dev: ChildProcess) {
    this.dataDir = dataDir;
    this.basePort = basePort;
    this.nodes = nodes;
    this.dev = dev;
    dev.stdout?.on("data", (chunk: Buffer) => (this.output += chunk.toString()));
    dev.stderr?.on("data", (chunk: Buffer) => (this.output += chunk.toString()));
  }

  static async start(nodes = 3): Promise<TestCluster> {
    if (!existsSync(NODE_BINARY)) {
      throw new Error(`${NODE_BINARY} is missing: run cargo build -p dispotify --bin dispotify`);
    }
    if (!existsSync(join(REPO, "frontend/dist/index.html"))) {
      throw new Error("frontend/dist is missing: run npm run build in frontend/");
    }
    const dataDir = mkdtempSync(join(tmpdir(), "dispotify-e2e-"));
    const basePort = await freePortBase(nodes);
    const dev = spawn(
      NODE_BINARY,
      ["dev", "--nodes", String(nodes), "--http-port", String(basePort), "--data-dir", dataDir],
      {
        cwd: REPO,
        stdio: ["ignore", "pipe", "pipe"],
        // The e2e run builds the app itself; the nodes serve frontend/dist.
        env: { ...process.env, DISPOTIFY_SKIP_WEB_BUILD: "1", DISPOTIFY_LOG: "info" },
      },
    );
    const cluster = new TestCluster(dataDir, basePort, nodes, dev);
    try {
      await cluster.waitReady();
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  url(node: number): string {
    return `http://127.0.0.1:${this.basePort + node - 1}`;
  }

  private async waitReady(): Promise<void> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (this.dev.exitCode !== null) {
        throw new Error(`dispotify dev exited with ${this.dev.exitCode}:\n${this.output}`);
      }
      const ready = await Promise.all(
        Array.from({ length: this.nodes }, (_, i) =>
          fetch(`${this.url(i + 1)}/ready`).then(
            (response) => response.ok,
            () => false,
          ),
        ),
      );
      if (ready.every(Boolean)) return;
      await sleep(250);
    }
    throw new Error(`the cluster was not ready within ${READY_TIMEOUT_MS} ms:\n${this.output}`);
  }

  /** Process ids of this cluster's `serve` children, by node id. */
  nodePids(): Map<string, number> {
    const pids = new Map<string, number>();
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      let args: string[];
      try {
        args = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      } catch {
        continue;
      }
      const dataDir = args[args.indexOf("--data-dir") + 1] ?? "";
      if (args.includes("serve") && dataDir.startsWith(this.dataDir)) {
        pids.set(args[args.indexOf("--id") + 1], Number(entry));
      }
    }
    return pids;
  }

  /** Kills one node with SIGKILL, as a crash would. */
  kill(nodeId: string): void {
    const pid = this.nodePids().get(nodeId);
    if (pid === undefined) throw new Error(`no running process for ${nodeId}`);
    process.kill(pid, "SIGKILL");
  }

  async stop(): Promise<void> {
    if (this.dev.exitCode === null) {
      this.dev.kill("SIGTERM");
      const deadline = Date.now() + STOP_TIMEOUT_MS;
      while (this.dev.exitCode === null && Date.now() < deadline) await sleep(100);
    }
    // A node left behind by a dev command that was itself killed.
    for (const pid of this.nodePids().values()) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    if (this.dev.exitCode === null) this.dev.kill("SIGKILL");
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/**
 * A WAV file of a quiet tone (16-bit stereo PCM at 44.1 kHz) with RIFF INFO
 * title and artist tags: long enough to seek in and to kill a node while
 * it plays.
 */
export function toneWav(
  seconds: number,
  title: string,
  artist: string,
  album?: { name: string; track: number },
): Buffer {
  const sampleRate = 44_100;
  const channels = 2;
  const frames = seconds * sampleRate;
  const data = Buffer.alloc(frames * channels * 2);
  for (let frame = 0; frame < frames; frame++) {
    const sample = Math.round(Math.sin((2 * Math.PI * 440 * frame) / sampleRate) * 2000);
    data.writeInt16LE(sample, frame * 4);
    data.writeInt16LE(sample, frame * 4 + 2);
  }
  const infoEntry = (id: string, text: string) => {
    const value = Buffer.from(`${text}\0`, "latin1");
    const padded = value.length % 2 === 0 ? value : Buffer.concat([value, Buffer.alloc(1)]);
    const header = Buffer.alloc(8);
    header.write(id, 0, "ascii");
    header.writeUInt32LE(value.length, 4);
    return Buffer.concat([header, padded]);
  };
  const entries = [infoEntry("INAM", title), infoEntry("IART", artist)];
  if (album) entries.push(infoEntry("IPRD", album.name), infoEntry("IPRT", String(album.track)));
  const info = Buffer.concat([Buffer.from("INFO"), ...entries]);
  const list = Buffer.alloc(8);
  list.write("LIST", 0, "ascii");
  list.writeUInt32LE(info.length, 4);
  const format = Buffer.alloc(24);
  format.write("fmt ", 0, "ascii");
  format.writeUInt32LE(16, 4);
  format.writeUInt16LE(1, 8);
  format.writeUInt16LE(channels, 10);
  format.writeUInt32LE(sampleRate, 12);
  format.writeUInt32LE(sampleRate * channels * 2, 16);
  format.writeUInt16LE(channels * 2, 20);
  format.writeUInt16LE(16, 22);
  const dataHeader = Buffer.alloc(8);
  dataHeader.write("data", 0, "ascii");
  dataHeader.writeUInt32LE(data.length, 4);
  const body = Buffer.concat([Buffer.from("WAVE"), format, list, info, dataHeader, data]);
  const riff = Buffer.alloc(8);
  riff.write("RIFF", 0, "ascii");
  riff.writeUInt32LE(body.length, 4);
  return Buffer.concat([riff, body]);
}

/**
 * Encodes a quiet tone as MP3 (LAME through ffmpeg, 44.1 kHz stereo) with
 * ID3v2 title, artist, album and track tags. Like every MP3 it carries the
 * encoder's delay and padding, which a gapless player has to leave out.
 */
export function toneMp3(
  seconds: number,
  title: string,
  artist: string,
  album: { name: string; track: number },
  frequency: number,
): Buffer {
  const dir = mkdtempSync(join(tmpdir(), "dispotify-tone-"));
  const out = join(dir, "tone.mp3");
  try {
    execFileSync(
      "ffmpeg",
      [
        "-loglevel", "error",
        "-f", "lavfi",
        "-i", `sine=frequency=${frequency}:duration=${seconds}:sample_rate=44100`,
        "-af", "volume=0.5",
        "-ac", "2",
        "-c:a", "libmp3lame",
        "-b:a", "192k",
        "-id3v2_version", "3",
        "-metadata", `title=${title}`,
        "-metadata", `artist=${artist}`,
        "-metadata", `album=${album.name}`,
        "-metadata", `track=${album.track}`,
        out,
      ],
      { stdio: ["ignore", "ignore", "inherit"] },
    );
    return readFileSync(out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
