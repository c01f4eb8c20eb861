//! Busy-polling baselines: the floor of a round trip, and of requests kept
//! in flight, on this machine. Two threads on the bus's CPUs with
//! non-blocking std sockets that spin on `WouldBlock` instead of sleeping in
//! the kernel (as a bus shard spins before it parks), exchanging
//! length-prefixed frames (u32 length + payload) that the server echoes.
//!
//! The blocking ping-pong of [`crate::wire`] pays a sleep and a wake-up per
//! message on each side; these pay neither, so they are what a bus that
//! spins can at best reach.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Result};
use hdrhistogram::Histogram;

fn pin(cpu: Option<usize>) {
    if let Some(id) = cpu {
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
}

/// Writes all of `buf`, spinning while the socket is full.
fn write_all_spin(s: &mut TcpStream, mut buf: &[u8]) -> Result<()> {
    while !buf.is_empty() {
        match s.write(buf) {
            Ok(0) => return Err(anyhow!("peer closed while writing")),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads what is there into `buf`, spinning until something is: the count,
/// 0 at the end of the stream.
fn read_spin(s: &mut TcpStream, buf: &mut [u8]) -> Result<usize> {
    loop {
        match s.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(e.into()),
        }
    }
}

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// The echo server: every whole frame read goes back at once, in one write
/// per read.
fn serve(listener: TcpListener, frame: usize, cpu: Option<usize>) -> Result<()> {
    pin(cpu);
    let (mut s, _) = listener.accept()?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut have = 0usize;
    loop {
        let n = read_spin(&mut s, &mut buf[have..])?;
        if n == 0 {
            return Ok(());
        }
        have += n;
        let echo = have / frame * frame;
        write_all_spin(&mut s, &buf[..echo])?;
        buf.copy_within(echo..have, 0);
        have -= echo;
    }
}

/// One frame of `payload` bytes.
fn frame_of(payload: usize) -> Vec<u8> {
    let mut f = (payload as u32).to_le_bytes().to_vec();
    f.resize(4 + payload, 7);
    f
}

/// `warmup + count` round trips with `inflight` requests outstanding (the
/// client sends a new one for each reply); the latencies of the last
/// `count` in ns, and their rate in replies per second. With `inflight` 1
/// this is a busy-polling ping-pong.
pub fn requests(
    payload: usize,
    count: u64,
    warmup: u64,
    inflight: usize,
    cpu_client: Option<usize>,
    cpu_server: Option<usize>,
) -> Result<(Histogram<u64>, f64)> {
    ensure!(inflight >= 1, "at least one request in flight");
    // Every read and write below fits whole frames in 256 KiB.
    ensure!(
        (4 + payload) * inflight <= 128 * 1024,
        "at most 128 KiB of requests in flight"
    );
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let frame = frame_of(payload);
    let len = frame.len();
    let server = std::thread::spawn(move || serve(listener, len, cpu_server));
    let client = std::thread::spawn(move || -> Result<(Histogram<u64>, f64)> {
        pin(cpu_client);
        let mut s = connect(addr)?;
        let total = warmup + count;
        let mut hist = Histogram::<u64>::new(3)?;
        let mut sent_at: VecDeque<Instant> = VecDeque::with_capacity(inflight);
        let batch: Vec<u8> = frame.repeat(inflight);
        let mut buf = vec![0u8; 256 * 1024];
        let (mut have, mut sent, mut done) = (0usize, 0u64, 0u64);
        let mut measured_from = Instant::now();
        // The first `inflight` requests leave together.
        let first = (inflight as u64).min(total);
        let now = Instant::now();
        sent_at.extend(std::iter::repeat_n(now, first as usize));
        write_all_spin(&mut s, &batch[..first as usize * len])?;
        sent += first;
        while done < total {
            let n = read_spin(&mut s, &mut buf[have..])?;
            ensure!(n > 0, "server closed after {done} replies");
            have += n;
            let replies = have / len;
            let now = Instant::now();
            for _ in 0..replies {
                let t = sent_at.pop_front().expect("a reply answers a request");
                if done >= warmup {
                    hist.record(now.duration_since(t).as_nanos() as u64)?;
                }
                done += 1;
                if done == warmup {
                    measured_from = now;
                }
            }
            buf.copy_within(replies * len..have, 0);
            have -= replies * len;
            // As many new requests as replies came, in one write.
            let more = (replies as u64).min(total - sent) as usize;
            if more > 0 {
                sent_at.extend(std::iter::repeat_n(Instant::now(), more));
                write_all_spin(&mut s, &batch[..more * len])?;
                sent += more as u64;
            }
        }
        let elapsed = measured_from.elapsed().max(Duration::from_nanos(1));
        Ok((hist, count as f64 / elapsed.as_secs_f64()))
    });
    let out = client
        .join()
        .map_err(|_| anyhow!("busy-poll client panicked"))
        .and_then(|r| r);
    if out.is_err() {
        // A client that failed before connecting leaves the server in
        // `accept`: one connection that closes at once ends it.
        let _ = TcpStream::connect(addr);
    }
    // The client's socket closed (it returned): the server sees the end.
    let served = server
        .join()
        .map_err(|_| anyhow!("busy-poll server panicked"))
        .and_then(|r| r);
    let out = out?;
    served?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_gets_its_reply_one_or_many_in_flight() {
        for inflight in [1, 64] {
            let (hist, rate) = requests(64, 2_000, 100, inflight, None, None).unwrap();
            assert_eq!(hist.len(), 2_000);
            assert!(rate > 0.0);
        }
        // More in flight than requests at all.
        let (hist, _) = requests(16, 10, 0, 64, None, None).unwrap();
        assert_eq!(hist.len(), 10);
    }
}
