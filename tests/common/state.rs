//! The database as authenticated requests must leave it: for "nothing changed" comparisons
//! around requests that must be refused.

use super::{Sandbox, dump};

/// The database dump without the parts authenticated requests may legitimately change: audit
/// events are dropped and `api_tokens.last_used_at` is masked (every other token column, and
/// the set of tokens, still count).
pub fn requests_leave(sb: &Sandbox) -> String {
    let conn = rusqlite::Connection::open(sb.db()).unwrap();
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('api_tokens')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    drop(conn);
    let last_used = columns
        .iter()
        .position(|c| c == "last_used_at")
        .expect("api_tokens.last_used_at");
    let mut out = String::new();
    for line in dump(&sb.db()).lines() {
        if line.starts_with("audit_events:") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("api_tokens: ") {
            let mut cells: Vec<&str> = rest.split(" | ").collect();
            assert_eq!(cells.len(), columns.len(), "token row: {line}");
            cells[last_used] = "<last_used_at>";
            out.push_str(&format!("api_tokens: {}\n", cells.join(" | ")));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
