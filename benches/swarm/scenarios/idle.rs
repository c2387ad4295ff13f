//! B3: idle operator streams held, and the server's memory per stream.

use std::time::{Duration, Instant};

use tonic::transport::Channel;

use crate::clients::{self, BoxError};
use crate::report::Row;
use crate::target::Target;

/// Streams per HTTP/2 connection.
const PER_CONNECTION: usize = 2000;

/// Sessions created or deleted concurrently.
const BATCH: usize = 256;

/// Opens `streams` sessions with a stream each, reads the server's RSS, then deletes them.
pub(super) async fn b3(t: &Target, streams: usize) -> Result<Row, BoxError> {
    let before = t.rss_kib();
    let mut channels = Vec::new();
    for _ in 0..streams.div_ceil(PER_CONNECTION) {
        channels.push(t.channel().await?);
    }
    let started = Instant::now();
    let mut held = Vec::with_capacity(streams);
    let mut batch = Vec::new();
    for i in 0..streams {
        let ch = channels[i / PER_CONNECTION].clone();
        batch.push(tokio::spawn(async move {
            let (sid, token) = clients::create_session(&ch, &format!("idle-{i}")).await?;
            let (tx, frames, _) = clients::connect(&ch, &sid, &token, 0).await?;
            Ok::<_, BoxError>((ch, sid, token, tx, frames))
        }));
        if batch.len() == BATCH || i + 1 == streams {
            for j in batch.drain(..) {
                held.push(j.await??);
            }
        }
    }
    let open_time = started.elapsed();
    // Let allocations settle before reading RSS.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = t.rss_kib();
    let per_stream = match (before, after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 * 1024.0 / streams as f64),
        _ => None,
    };
    let row = Row {
        id: "B3",
        scenario: format!(
            "{streams} idle operator streams over {} HTTP/2 connections",
            channels.len()
        ),
        in_flight: streams,
        ops_per_sec: streams as f64 / open_time.as_secs_f64(),
        p50_us: 0.0,
        p99_us: 0.0,
        cpu_ms_per_task: None,
        note: match (per_stream, before, after) {
            (Some(p), Some(b), Some(a)) => format!(
                "server RSS {:.1} → {:.1} MiB: {:.1} KiB per stream (session included)",
                b as f64 / 1024.0,
                a as f64 / 1024.0,
                p / 1024.0
            ),
            _ => "RSS not measurable (--target)".into(),
        },
        target: "≥ 10,000 streams at ≤ 32 KiB each".into(),
        met: per_stream.map(|p| streams >= 10_000 && p <= 32.0 * 1024.0),
    };
    let sessions = held
        .into_iter()
        .map(|(ch, sid, token, _, _)| (ch, sid, token))
        .collect();
    delete_all(sessions).await?;
    Ok(row)
}

/// Deletes every session, `BATCH` at a time.
async fn delete_all(sessions: Vec<(Channel, String, String)>) -> Result<(), BoxError> {
    let mut sessions = sessions.into_iter().peekable();
    while sessions.peek().is_some() {
        let batch: Vec<_> = sessions
            .by_ref()
            .take(BATCH)
            .map(|(ch, sid, token)| {
                tokio::spawn(async move { clients::delete_session(&ch, &sid, &token).await })
            })
            .collect();
        for j in batch {
            j.await??;
        }
    }
    Ok(())
}
