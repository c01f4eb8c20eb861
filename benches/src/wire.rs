//! The "wire" baseline: the practical limit of this machine, measured with two
//! plain threads and blocking std TCP sockets over loopback.
//!
//! One-way: length-prefixed frames (u32 length + payload) batched into 64 KiB
//! writes, counted at the receiver. Ping-pong: one frame each way, blocking.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use hdrhistogram::Histogram;

use crate::report::Rate;

/// Bytes of a one-way frame's length prefix.
pub const PREFIX_LEN: usize = 4;

fn pin(cpu: Option<usize>) {
    if let Some(id) = cpu {
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
}

/// Streams `count` frames of `payload` bytes one way; the rate is taken at the
/// receiver from its first byte to its last frame.
pub fn one_way(
    payload: usize,
    count: u64,
    cpu_tx: Option<usize>,
    cpu_rx: Option<usize>,
) -> Result<Rate> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let receiver = std::thread::spawn(move || -> Result<(u64, Duration)> {
        pin(cpu_rx);
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 * 1024];
        let (mut start, mut end) = (0usize, 0usize);
        let mut got = 0u64;
        let mut first: Option<Instant> = None;
        while got < count {
            // Parse every complete frame.
            loop {
                let have = end - start;
                if have < 4 {
                    break;
                }
                let len =
                    u32::from_le_bytes(buf[start..start + 4].try_into().expect("4 bytes")) as usize;
                if have < 4 + len {
                    if buf.len() < 4 + len {
                        buf.resize(4 + len, 0);
                    }
                    break;
                }
                start += 4 + len;
                got += 1;
            }
            if start == end {
                start = 0;
                end = 0;
            } else if buf.len() - end < 64 * 1024 {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            }
            if got >= count {
                break;
            }
            let n = s.read(&mut buf[end..])?;
            ensure!(n > 0, "sender closed early after {got} frames");
            first.get_or_insert_with(Instant::now);
            end += n;
        }
        Ok((got, first.map(|f| f.elapsed()).unwrap_or_default()))
    });
    let sender = std::thread::spawn(move || -> Result<()> {
        pin(cpu_tx);
        send_frames(addr, payload, count)
    });
    let (got, elapsed) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    ensure!(got == count, "wire baseline lost frames: {got}/{count}");
    Ok(Rate::new(got, payload, elapsed))
}

fn send_frames(addr: std::net::SocketAddr, payload: usize, count: u64) -> Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let frame_len = PREFIX_LEN + payload;
    let per_chunk = (64 * 1024 / frame_len).max(1);
    let mut chunk = Vec::with_capacity(per_chunk * frame_len);
    let body = vec![7u8; payload];
    for _ in 0..per_chunk {
        chunk.extend_from_slice(&(payload as u32).to_le_bytes());
        chunk.extend_from_slice(&body);
    }
    let mut left = count;
    while left > 0 {
        let n = left.min(per_chunk as u64) as usize;
        s.write_all(&chunk[..n * frame_len])?;
        left -= n as u64;
    }
    Ok(())
}

/// Blocking ping-pong: `count` round trips after `warmup`, in ns.
pub fn ping_pong(
    payload: usize,
    count: u64,
    warmup: u64,
    cpu_client: Option<usize>,
    cpu_server: Option<usize>,
) -> Result<Histogram<u64>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> Result<()> {
        pin(cpu_server);
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; 4 + payload];
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf)?;
        }
        Ok(())
    });
    let client = std::thread::spawn(move || ping_client(addr, payload, count, warmup, cpu_client));
    let hist = client
        .join()
        .map_err(|_| anyhow::anyhow!("client panicked"))??;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    Ok(hist)
}

fn ping_client(
    addr: std::net::SocketAddr,
    payload: usize,
    count: u64,
    warmup: u64,
    cpu: Option<usize>,
) -> Result<Histogram<u64>> {
    pin(cpu);
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut frame = (payload as u32).to_le_bytes().to_vec();
    frame.extend(std::iter::repeat_n(7u8, payload));
    let mut back = vec![0u8; frame.len()];
    let mut hist = Histogram::<u64>::new(3)?;
    for i in 0..warmup + count {
        let t = Instant::now();
        s.write_all(&frame)?;
        s.read_exact(&mut back).context("ping-pong reply")?;
        if i >= warmup {
            hist.record(t.elapsed().as_nanos() as u64)?;
        }
    }
    Ok(hist)
}
