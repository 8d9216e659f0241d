//! Masking: a pty session's output with the values of the user's masked secrets replaced by
//! `***` before it leaves keyport (design.md, "Secret lifecycle"). No I/O: a [`Masker`] takes
//! output chunks as the pump reads them and gives back what may be sent now, and
//! [`Masker::within_hold`] bounds the pump's wait for its next read; the local pty
//! pump (`ssh/channel.rs`) and the relayed one (`relay/session.rs`) both use it, and only
//! for pty sessions — exec channels without a pty, sftp and scp are never altered.
//!
//! # What is masked
//!
//! Every occurrence of a value of at least [`MASK_MIN_LEN`] bytes, and of the same value as a
//! terminal shows it (each `\n` as `\r\n`, the pty's `onlcr`), so a multi-line key that is
//! `cat` in a pty is masked too. Occurrences that overlap (two values sharing bytes, a value
//! inside a longer one, a value that is a prefix of another) are one masked run and one
//! `***`: the longest reading wins, and no byte of either value shows. Adjacent occurrences
//! are separate `***`s.
//!
//! This protects screens, screen shares and recordings (`script`, asciinema, a terminal's
//! scroll-back) from showing a value by accident. It is not a boundary against the user:
//! `echo $TOKEN | base64`, `rev`, or printing the value one byte per line shows it in a form
//! no masker can know.
//!
//! # Algorithm
//!
//! An Aho-Corasick automaton over the values (a trie with failure links, a dense table for
//! the root), run over the stream as one string: its state carries over from chunk to chunk,
//! so a value split across reads is found like any other. While the automaton is at its root
//! (no value begun) it is not run at all: the scan looks up every 7th pair of bytes in a
//! bitmap of the pairs among the first 8 bytes of each value (every value has at least 8, so
//! any occurrence has one at a sampled position), and runs the automaton only from a few bytes
//! before a hit, and over a chunk's last bytes. That costs about 0.35 ns a byte (2.8 GB/s on
//! the bench machine, whatever the number of values), against 3 ns for a scan that stops at
//! every byte a value starts with (`g`, `s`, `p` are common in text). Each state knows its
//! depth — how many of the last bytes could still be the start of a value — so the masker
//! holds back exactly those bytes at a chunk's end: at most the longest value less one byte.
//! Everything before them is final and goes out with the chunk; a chunk with nothing to mask
//! and nothing to hold is given back as it came (no copy).
//!
//! It is written here rather than with the `aho-corasick` crate: that crate's automata and
//! prefilters keep copies of the values in memory that cannot be zeroized, and every table
//! here is (secret values are a type that zeroizes on drop; style.md, rule 6).
//!
//! # Flush policy: held bytes never wait for ever
//!
//! Output that ends with what could be the start of a value (a shell echoing the `g` of a
//! typed `git`, a prompt) must not wait for bytes that may never come. The pump asks
//! [`Masker::flush_after`] how long the held bytes may wait for more output, reads with that
//! timeout, and on a timeout sends [`Masker::flush`]: the held bytes as they are. The wait
//! depends on how much is held:
//!
//! - fewer than [`SHORT_PREFIX`] bytes: [`SHORT_HOLD`] (20 ms). That is what echoed
//!   keystrokes and prompts look like; a typist does not notice 20 ms, and a value a program
//!   writes in one go but that the pty hands over in two reads arrives within microseconds.
//! - [`SHORT_PREFIX`] bytes or more: [`LONG_HOLD`] (1 s). Four or more bytes of a value's
//!   start at the end of the output are almost always the value being printed, in pieces
//!   (a shell's two `printf`s with a `sleep` between them, a slow pipe), so they wait for
//!   the rest. Output that merely ends like that is at most a second late.
//!
//! Any output in the meantime is appended to the held bytes and scanned as usual, and the
//! end of output flushes. After a flush the automaton keeps its place: if the rest of the
//! value follows later, that rest is still replaced by `***` (the screen shows the flushed
//! prefix, never the whole value).

use std::time::Duration;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::MASK_MIN_LEN;

/// What a masked run of output becomes.
pub const REPLACEMENT: &[u8] = b"***";
/// Held bytes fewer than this wait [`SHORT_HOLD`] for more output; more wait [`LONG_HOLD`].
pub const SHORT_PREFIX: usize = 4;
/// How long a short held prefix waits for more output (see the module doc).
pub const SHORT_HOLD: Duration = Duration::from_millis(20);
/// How long a held prefix of [`SHORT_PREFIX`] bytes or more waits for more output.
pub const LONG_HOLD: Duration = Duration::from_secs(1);

/// The scan looks up every STRIDE-th pair of output bytes (less than [`MASK_MIN_LEN`]).
const STRIDE: usize = 7;

/// The automaton's root: no value begun.
const ROOT: u32 = 0;

/// Masks one output stream. Every table and buffer is zeroized on drop: they hold the
/// values, or parts of them.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Masker {
    // The automaton, one entry per state (state 0 is the root).
    /// The root's transitions, dense: 256 entries.
    root: Vec<u32>,
    /// Bit `b` of byte `a * 32 + b / 8` is set when the bytes `a b` are among the first
    /// [`STRIDE`] + 1 of a value (8 KiB): the scan samples every [`STRIDE`]-th pair.
    pairs: Box<[u8; 256 * 32]>,
    /// How many bytes of a value the state stands for.
    depth: Vec<u32>,
    /// The state for the longest proper suffix that is also the start of a value.
    fail: Vec<u32>,
    /// The length of the longest value that ends here (0: none).
    found: Vec<u32>,
    /// State `s`'s transitions are `labels[edges[s]..edges[s + 1]]` → `targets[…]`.
    edges: Vec<u32>,
    labels: Vec<u8>,
    targets: Vec<u32>,
    /// The longest value, in bytes.
    longest: usize,

    // The stream, in absolute byte positions.
    /// The automaton's state after the last byte pushed.
    state: u32,
    /// Bytes pushed so far.
    pos: u64,
    /// Bytes decided so far (sent as they are, or as part of a `***`); `held` is
    /// `[done, pos)`.
    done: u64,
    /// The end of the last masked run: output up to it went out as `***`.
    covered: u64,
    /// Undecided bytes: they may be the start of a value (at most `longest - 1`).
    held: Vec<u8>,
    /// Masked runs among the held bytes, not yet sent: (start, end) pairs, in order,
    /// disjoint.
    pending: Vec<u64>,
    /// What the last call gives back, when it is not the pushed chunk itself.
    out: Vec<u8>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("states", &self.depth.len())
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

/// Where a push's output is so far: a prefix of the chunk itself, or copied into `out`.
#[derive(Clone, Copy)]
enum Sink {
    /// The output so far is `chunk[..n]` (and `out` is empty).
    Direct(usize),
    Copy,
}

impl Masker {
    /// A masker for `values`, or `None` when none of them is long enough to be masked
    /// (shorter than [`MASK_MIN_LEN`]). The order does not matter: the longest reading of
    /// overlapping values always wins.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Self> {
        let mut patterns: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        for value in values {
            if value.len() < MASK_MIN_LEN {
                continue;
            }
            patterns.push(Zeroizing::new(value.to_vec()));
            if value.contains(&b'\n') {
                patterns.push(as_terminal_shows(value));
            }
        }
        let longest = patterns.iter().map(|p| p.len()).max()?;
        // A value is at most 64 KiB: state numbers fit u32 many times over.
        let total: usize = patterns.iter().map(|p| p.len()).sum();
        u32::try_from(total + 1).ok()?;
        let mut masker = Self::build(&patterns);
        for p in &patterns {
            // Every pattern has more than STRIDE + 1 bytes (MASK_MIN_LEN).
            for w in p.windows(2).take(STRIDE) {
                let (a, b) = (usize::from(w[0]), usize::from(w[1]));
                masker.pairs[a * 32 + b / 8] |= 1 << (b % 8);
            }
        }
        masker.longest = longest;
        masker.held = Vec::with_capacity(longest);
        masker.pending = Vec::with_capacity(2 * (longest / MASK_MIN_LEN + 1));
        Some(masker)
    }

    /// The automaton: a trie of `patterns`, then failure links breadth first.
    fn build(patterns: &[Zeroizing<Vec<u8>>]) -> Self {
        // Children per state while building, zeroized when done.
        let mut kids: Zeroizing<Vec<Vec<u8>>> = Zeroizing::new(vec![Vec::new()]);
        let mut kid_states: Zeroizing<Vec<Vec<u32>>> = Zeroizing::new(vec![Vec::new()]);
        let mut depth = vec![0u32];
        let mut found = vec![0u32];
        for pattern in patterns {
            let mut s = 0usize;
            for &b in pattern.iter() {
                s = match kids[s].iter().position(|&k| k == b) {
                    Some(i) => kid_states[s][i] as usize,
                    None => {
                        let next = depth.len();
                        kids[s].push(b);
                        kid_states[s].push(next as u32);
                        kids.push(Vec::new());
                        kid_states.push(Vec::new());
                        depth.push(depth[s] + 1);
                        found.push(0);
                        next
                    }
                };
            }
            found[s] = depth[s];
        }
        let n = depth.len();
        let child = |s: usize, b: u8| {
            kids[s]
                .iter()
                .position(|&k| k == b)
                .map(|i| kid_states[s][i])
        };
        let mut fail = vec![ROOT; n];
        let mut queue = std::collections::VecDeque::from(kid_states[0].clone());
        while let Some(s) = queue.pop_front() {
            let s = s as usize;
            for (i, &b) in kids[s].iter().enumerate() {
                let c = kid_states[s][i] as usize;
                // The longest proper suffix of c's string that is the start of a value.
                let mut f = fail[s] as usize;
                let target = loop {
                    if let Some(t) = child(f, b) {
                        break t;
                    }
                    if f == ROOT as usize {
                        break ROOT;
                    }
                    f = fail[f] as usize;
                };
                fail[c] = target;
                // fail[c] is shallower, so its own `found` is final already.
                found[c] = found[c].max(found[target as usize]);
                queue.push_back(c as u32);
            }
        }
        let mut root = vec![ROOT; 256];
        for (i, &b) in kids[0].iter().enumerate() {
            root[usize::from(b)] = kid_states[0][i];
        }
        let mut edges = Vec::with_capacity(n + 1);
        let (mut labels, mut targets) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for s in 0..n {
            edges.push(labels.len() as u32);
            labels.extend_from_slice(&kids[s]);
            targets.extend_from_slice(&kid_states[s]);
        }
        edges.push(labels.len() as u32);
        Self {
            root,
            pairs: Box::new([0u8; 256 * 32]),
            depth,
            fail,
            found,
            edges,
            labels,
            targets,
            longest: 0,
            state: ROOT,
            pos: 0,
            done: 0,
            covered: 0,
            held: Vec::new(),
            pending: Vec::new(),
            out: Vec::new(),
        }
    }

    /// The state after `s` reads `b`.
    #[inline]
    fn next(&self, mut s: u32, b: u8) -> u32 {
        loop {
            if s == ROOT {
                return self.root[usize::from(b)];
            }
            let (lo, hi) = (
                self.edges[s as usize] as usize,
                self.edges[s as usize + 1] as usize,
            );
            if let Some(i) = self.labels[lo..hi].iter().position(|&l| l == b) {
                return self.targets[lo + i];
            }
            s = self.fail[s as usize];
        }
    }

    /// Whether a value starts with `a b`.
    #[inline]
    fn pair(&self, a: u8, b: u8) -> u8 {
        (self.pairs[usize::from(a) * 32 + usize::from(b / 8)] >> (b % 8)) & 1
    }

    /// Where the automaton must run next, from the root, at or after `from` (where it is at
    /// the root): `(start, last)`, to run from `start` through `last` at least. The pairs at
    /// every [`STRIDE`]-th position are looked up: a value starting at `p` has one of its first
    /// [`STRIDE`] pairs at a sampled `q` in `p..p + STRIDE`, so on a hit at `q` the run starts
    /// `STRIDE - 1` bytes before it; no value starts at the positions skipped. The last
    /// [`STRIDE`] bytes, where a value may start and go on in the next chunk, are always run.
    #[inline]
    fn skip(&self, chunk: &[u8], from: usize) -> Option<(usize, usize)> {
        let n = chunk.len();
        let mut q = from;
        // Eight samples at a time: output is mostly pairs no value starts with.
        while q + 7 * STRIDE + 1 < n {
            let w = &chunk[q..q + 7 * STRIDE + 2];
            let mut any = 0;
            for k in 0..8 {
                any |= self.pair(w[k * STRIDE], w[k * STRIDE + 1]);
            }
            if any != 0 {
                break;
            }
            q += 8 * STRIDE;
        }
        while q + 1 < n {
            if self.pair(chunk[q], chunk[q + 1]) != 0 {
                return Some(((q + 1).saturating_sub(STRIDE).max(from), q));
            }
            q += STRIDE;
        }
        let tail = n.saturating_sub(STRIDE).max(from);
        (tail < n).then_some((tail, n - 1))
    }

    /// Takes the next chunk of output; gives back what may be sent now (possibly nothing,
    /// while bytes are held). Bytes held from earlier calls come first in it.
    pub fn push<'a>(&'a mut self, chunk: &'a [u8]) -> &'a [u8] {
        self.out.clear();
        let base = self.pos;
        let mut sink = Sink::Direct(0);
        let mut s = self.state;
        let mut i = 0;
        // The automaton runs through `until` even where it is at the root (see `skip`).
        let mut until = 0;
        while i < chunk.len() {
            if s == ROOT && i >= until {
                match self.skip(chunk, i) {
                    Some((start, last)) => (i, until) = (start, last + 1),
                    None => break,
                }
            }
            s = self.next(s, chunk[i]);
            i += 1;
            let len = self.found[s as usize];
            if len != 0 {
                let end = base + i as u64;
                let boundary = end - u64::from(self.depth[s as usize]);
                self.matched(end - u64::from(len), end, chunk, &mut sink);
                self.decide(boundary, chunk, base, &mut sink);
            }
        }
        self.state = s;
        self.pos = base + chunk.len() as u64;
        let boundary = self.pos - u64::from(self.depth[s as usize]);
        self.decide(boundary, chunk, base, &mut sink);
        // What is still undecided stays: `[done, pos)`.
        let held_start = base - self.held.len() as u64;
        if self.done >= base {
            self.held.clear();
            self.held
                .extend_from_slice(&chunk[(self.done - base) as usize..]);
        } else {
            self.held.drain(..(self.done - held_start) as usize);
            self.held.extend_from_slice(chunk);
        }
        match sink {
            Sink::Direct(n) => &chunk[..n],
            Sink::Copy => &self.out,
        }
    }

    /// Lets the held bytes go, as they are (masked runs among them as `***`): the pump calls
    /// this when [`Masker::flush_after`] passed with no more output, and at the end of
    /// output. A value whose start goes out this way still has its rest masked.
    pub fn flush(&mut self) -> &[u8] {
        self.out.clear();
        let mut sink = Sink::Copy;
        let base = self.pos;
        while let [start, end, ..] = self.pending[..] {
            self.emit_raw(start, &[], base, &mut sink);
            self.out.extend_from_slice(REPLACEMENT);
            (self.done, self.covered) = (end, end);
            self.pending.drain(..2);
        }
        self.emit_raw(self.pos, &[], base, &mut sink);
        self.done = self.pos;
        self.held.clear();
        &self.out
    }

    /// How long the held bytes may wait for more output before [`Masker::flush`]; `None`
    /// when nothing is held (see the module doc for the policy).
    pub fn flush_after(&self) -> Option<Duration> {
        match self.held.len() {
            0 => None,
            n if n < SHORT_PREFIX => Some(SHORT_HOLD),
            _ => Some(LONG_HOLD),
        }
    }

    /// Awaits `next` (the pump's next read) for no longer than `masker`'s held bytes may
    /// wait: `None` when that time ran out first, and the held bytes are due
    /// ([`Masker::flush`]). Without a masker, or with nothing held, it just awaits `next`.
    /// The one flush rule both pumps follow.
    pub async fn within_hold<F: std::future::Future>(
        masker: Option<&Self>,
        next: F,
    ) -> Option<F::Output> {
        match masker.and_then(Masker::flush_after) {
            Some(wait) => tokio::time::timeout(wait, next).await.ok(),
            None => Some(next.await),
        }
    }

    /// A value `[start, end)` ended at the position just read.
    fn matched(&mut self, start: u64, end: u64, chunk: &[u8], sink: &mut Sink) {
        if start < self.done {
            // It overlaps what has gone out: a masked run goes on (silently), or the start
            // of a value was flushed as it was and its rest is masked now.
            if start >= self.covered {
                self.start_copy(chunk, sink);
                self.out.extend_from_slice(REPLACEMENT);
            }
            // Everything held lies inside this value.
            self.pending.clear();
            (self.done, self.covered) = (end, end);
            return;
        }
        // Overlapping runs are one run (runs end in order: only the last ones can overlap).
        let mut start = start;
        while let [.., s, e] = self.pending[..] {
            if e <= start {
                break;
            }
            start = start.min(s);
            self.pending.truncate(self.pending.len() - 2);
        }
        self.pending.extend([start, end]);
    }

    /// Sends what no later byte can change: no value ends later that starts before
    /// `boundary`, so masked runs starting at or before it and plain bytes before it are
    /// final.
    fn decide(&mut self, boundary: u64, chunk: &[u8], base: u64, sink: &mut Sink) {
        while let [start, end, ..] = self.pending[..] {
            if start > boundary {
                break;
            }
            self.emit_raw(start, chunk, base, sink);
            self.start_copy(chunk, sink);
            self.out.extend_from_slice(REPLACEMENT);
            (self.done, self.covered) = (end, end);
            self.pending.drain(..2);
        }
        if boundary > self.done {
            self.emit_raw(boundary, chunk, base, sink);
            self.done = boundary;
        }
    }

    /// Sends the bytes `[done, to)` as they are: from the held bytes (before `base`) and from
    /// `chunk` (which starts at `base`).
    fn emit_raw(&mut self, to: u64, chunk: &[u8], base: u64, sink: &mut Sink) {
        let from = self.done;
        if to <= from {
            return;
        }
        if from < base {
            let held_start = base - self.held.len() as u64;
            self.start_copy(chunk, sink);
            let (a, b) = (from - held_start, to.min(base) - held_start);
            self.out
                .extend_from_slice(&self.held[a as usize..b as usize]);
        }
        if to > base {
            let (a, b) = ((from.max(base) - base) as usize, (to - base) as usize);
            match sink {
                Sink::Direct(n) if *n == a => *n = b,
                _ => {
                    self.start_copy(chunk, sink);
                    self.out.extend_from_slice(&chunk[a..b]);
                }
            }
        }
    }

    /// From here on the output is built in `out`.
    fn start_copy(&mut self, chunk: &[u8], sink: &mut Sink) {
        if let Sink::Direct(n) = *sink {
            self.out.extend_from_slice(&chunk[..n]);
            *sink = Sink::Copy;
        }
    }
}

/// `value` as a terminal with `onlcr` (the default) shows it: each `\n` as `\r\n`.
fn as_terminal_shows(value: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut shown = Zeroizing::new(Vec::with_capacity(value.len() * 2));
    for &b in value {
        if b == b'\n' {
            shown.push(b'\r');
        }
        shown.push(b);
    }
    shown
}

#[cfg(test)]
#[path = "mask_tests.rs"]
mod tests;
