//! What `domictl` prints, as pure functions of records and the time: the
//! record → row mapping, the aligned table, the JSON objects, uptimes, one
//! line per membership change, a reply and its latency.

use std::fmt::Write as _;
use std::time::Duration;

use domi_cluster::etcd::record::NodeRecord;
use domi_cluster::etcd::RecordChange;
use serde::Serialize;

/// One node as `domictl nodes` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    /// Node id.
    pub id: u16,
    /// Node name.
    pub name: String,
    /// Bus address.
    pub bus: String,
    /// Admin address, if the node serves one.
    pub admin: Option<String>,
    /// `serving`, `paused` or `draining`.
    pub state: String,
    /// Channels served, ascending.
    pub channels: Vec<u16>,
    /// Seconds since the node started (from the record's `started_at`).
    pub uptime_s: u64,
    /// Start time, Unix seconds.
    pub started_at: u64,
    /// Software version.
    pub version: String,
    /// Shards.
    pub shards: usize,
}

impl Row {
    /// The row of `record`, `now` being the current Unix time in seconds.
    pub fn of(record: &NodeRecord, now: u64) -> Row {
        let mut channels = record.channels.clone();
        channels.sort_unstable();
        channels.dedup();
        Row {
            id: record.id,
            name: record.name.clone(),
            bus: record.tcp.clone(),
            admin: record.http.clone(),
            state: record.state.clone(),
            channels,
            uptime_s: now.saturating_sub(record.started_at),
            started_at: record.started_at,
            version: record.version.clone(),
            shards: record.shards,
        }
    }
}

/// An uptime as its two largest units: `42s`, `5m03s`, `2h05m`, `3d04h`.
pub fn uptime(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}

/// Channels as `50,51`, or `-` for none.
fn channel_list(channels: &[u16]) -> String {
    if channels.is_empty() {
        return "-".into();
    }
    channels
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The table of `rows`: a header, then one line per row, columns aligned
/// (`ID NAME BUS ADMIN STATE CHANNELS UPTIME`), `-` for no admin address.
pub fn table(rows: &[Row]) -> String {
    let header = ["ID", "NAME", "BUS", "ADMIN", "STATE", "CHANNELS", "UPTIME"];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.id.to_string(),
                r.name.clone(),
                r.bus.clone(),
                r.admin.clone().unwrap_or_else(|| "-".into()),
                r.state.clone(),
                channel_list(&r.channels),
                uptime(r.uptime_s),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &cells {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

/// `rows` as a JSON array of objects (one line).
pub fn json(rows: &[Row]) -> String {
    serde_json::to_string(rows).expect("rows always serialize")
}

/// The line `watch` prints for `change`: `joined`, `changed` (with what
/// changed), `left`, or `invalid` for a record that cannot be used.
pub fn change_line(change: &RecordChange) -> String {
    let id = change.id;
    match (&change.record, &change.previous) {
        (Some(Ok(now)), None) => format!(
            "joined  {id} {} {} bus {} channels {}",
            now.name,
            now.state,
            now.tcp,
            channel_list(&now.channels)
        ),
        (Some(Ok(now)), Some(before)) => {
            let what = differences(before, now);
            if what.is_empty() {
                format!("changed {id} {} {}", now.name, now.state)
            } else {
                format!(
                    "changed {id} {} {} ({})",
                    now.name,
                    now.state,
                    what.join(", ")
                )
            }
        }
        (Some(Err(e)), _) => format!("invalid {id}: {e}"),
        (None, Some(before)) => format!("left    {id} {} {}", before.name, before.state),
        (None, None) => format!("left    {id}"),
    }
}

/// What differs between two records of one node, as `field a -> b`.
fn differences(before: &NodeRecord, now: &NodeRecord) -> Vec<String> {
    let mut what = Vec::new();
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            what.push(format!("{name} {a} -> {b}"));
        }
    };
    field("state", before.state.clone(), now.state.clone());
    field(
        "channels",
        channel_list(&before.channels),
        channel_list(&now.channels),
    );
    field("bus", before.tcp.clone(), now.tcp.clone());
    let admin = |r: &NodeRecord| r.http.clone().unwrap_or_else(|| "-".into());
    field("admin", admin(before), admin(now));
    field("name", before.name.clone(), now.name.clone());
    if before.instance != now.instance {
        what.push("restarted".into());
    }
    what
}

/// A reply as printed: lowercase hex, or text (invalid UTF-8 replaced).
pub fn reply(bytes: &[u8], hex: bool) -> String {
    if hex {
        bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// A latency in the unit that suits it: `850µs`, `1.25ms`, `2.500s`.
pub fn latency(d: Duration) -> String {
    let micros = d.as_micros();
    if micros < 1000 {
        format!("{micros}µs")
    } else if micros < 1_000_000 {
        format!("{:.2}ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domi_cluster::etcd::record::RecordError;

    fn record(id: u16, name: &str, http: Option<&str>, channels: &[u16]) -> NodeRecord {
        NodeRecord {
            id,
            name: name.into(),
            version: "0.1.0".into(),
            protocol: 2,
            instance: "0abc".into(),
            tcp: format!("127.0.0.1:{}", 40000 + id),
            http: http.map(Into::into),
            shards: 1,
            channels: channels.to_vec(),
            state: "serving".into(),
            started_at: 1_000,
        }
    }

    #[test]
    fn uptimes_show_two_units() {
        assert_eq!(uptime(0), "0s");
        assert_eq!(uptime(42), "42s");
        assert_eq!(uptime(303), "5m03s");
        assert_eq!(uptime(2 * 3600 + 5 * 60 + 7), "2h05m");
        assert_eq!(uptime(3 * 86_400 + 4 * 3600), "3d04h");
    }

    #[test]
    fn rows_come_from_records() {
        let row = Row::of(
            &record(3, "a", Some("127.0.0.1:8080"), &[51, 50, 50]),
            1_090,
        );
        assert_eq!(row.channels, vec![50, 51]);
        assert_eq!(row.uptime_s, 90);
        assert_eq!(row.admin.as_deref(), Some("127.0.0.1:8080"));
        // A clock behind the node's shows 0, not a wrap-around.
        assert_eq!(Row::of(&record(3, "a", None, &[]), 10).uptime_s, 0);
    }

    #[test]
    fn the_table_is_aligned() {
        let rows = [
            Row::of(&record(0, "alpha", Some("127.0.0.1:8080"), &[50]), 1_042),
            Row::of(&record(12, "b", None, &[]), 1_400),
        ];
        let t = table(&rows);
        let expected = "\
ID  NAME   BUS              ADMIN           STATE    CHANNELS  UPTIME
0   alpha  127.0.0.1:40000  127.0.0.1:8080  serving  50        42s
12  b      127.0.0.1:40012  -               serving  -         6m40s
";
        assert_eq!(t, expected);
        assert_eq!(
            table(&[]),
            "ID  NAME  BUS  ADMIN  STATE  CHANNELS  UPTIME\n"
        );
    }

    #[test]
    fn json_rows_are_objects() {
        let rows = [Row::of(&record(1, "a", None, &[50]), 1_005)];
        let v: serde_json::Value = serde_json::from_str(&json(&rows)).unwrap();
        assert_eq!(v[0]["id"], 1);
        assert_eq!(v[0]["admin"], serde_json::Value::Null);
        assert_eq!(v[0]["channels"], serde_json::json!([50]));
        assert_eq!(v[0]["uptime_s"], 5);
        assert_eq!(v[0]["state"], "serving");
    }

    #[test]
    fn changes_are_one_line_each() {
        let a = record(1, "a", None, &[50]);
        let mut paused = a.clone();
        paused.state = "paused".into();
        let change = |record, previous| RecordChange {
            id: 1,
            record,
            previous,
        };
        assert_eq!(
            change_line(&change(Some(Ok(a.clone())), None)),
            "joined  1 a serving bus 127.0.0.1:40001 channels 50"
        );
        assert_eq!(
            change_line(&change(Some(Ok(paused.clone())), Some(a.clone()))),
            "changed 1 a paused (state serving -> paused)"
        );
        assert_eq!(
            change_line(&change(Some(Ok(a.clone())), Some(a.clone()))),
            "changed 1 a serving"
        );
        assert_eq!(
            change_line(&change(None, Some(paused))),
            "left    1 a paused"
        );
        assert_eq!(change_line(&change(None, None)), "left    1");
        let bad = RecordError::IdMismatch { key: 1, record: 2 };
        assert!(change_line(&change(Some(Err(bad)), None)).starts_with("invalid 1: "));
    }

    #[test]
    fn replies_and_latencies() {
        assert_eq!(reply(b"pong", false), "pong");
        assert_eq!(reply(&[0xff, b'a'], false), "\u{fffd}a");
        assert_eq!(reply(&[0x00, 0xab], true), "00ab");
        assert_eq!(latency(Duration::from_micros(850)), "850µs");
        assert_eq!(latency(Duration::from_micros(1250)), "1.25ms");
        assert_eq!(latency(Duration::from_millis(2500)), "2.500s");
    }
}
