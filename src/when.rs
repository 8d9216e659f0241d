//! Times as keyport shows and reads them: stored timestamps (ms since the epoch) as RFC 3339,
//! ages to their largest unit, and `since` filters (a time or an age before now). The CLI, the
//! API and the web pages all use these.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A timestamp (ms since the epoch) as RFC 3339, to the second.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// How long `elapsed_ms` is, to its largest unit: `97d`, `5h`, `3m`, or `now` under a minute.
pub fn age(elapsed_ms: i64) -> String {
    match elapsed_ms.max(0) / 1000 {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        _ => "now".into(),
    }
}

/// `since` as ms since the epoch: an RFC 3339 time or an age before now.
pub fn parse_since(text: &str) -> Option<i64> {
    let at = humantime::parse_rfc3339_weak(text).ok().or_else(|| {
        let age: Duration = humantime::parse_duration(text).ok()?;
        SystemTime::now().checked_sub(age)
    })?;
    let ms = at.duration_since(UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms).ok()
}
