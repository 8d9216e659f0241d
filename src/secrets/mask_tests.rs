//! Unit tests of the pty output masker: values split at every boundary, overlaps, flushes,
//! bounded buffers, and a reference model over random streams.
use super::*;

/// The masker over `values`.
fn masker(values: &[&[u8]]) -> Masker {
    Masker::new(values.iter().copied()).expect("something to mask")
}

/// `stream` pushed in pieces cut at `cuts`, then flushed: everything that came out.
fn through(m: &mut Masker, stream: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut shown = Vec::new();
    let mut at = 0;
    for &cut in cuts.iter().chain([&stream.len()]) {
        shown.extend_from_slice(m.push(&stream[at..cut]));
        at = cut;
    }
    shown.extend_from_slice(m.flush());
    shown
}

fn whole(values: &[&[u8]], stream: &[u8]) -> Vec<u8> {
    through(&mut masker(values), stream, &[])
}

/// The model: every occurrence of every value (and of its `\r\n` form), overlapping ones
/// joined into one run, each run shown as `***`.
fn reference(values: &[&[u8]], stream: &[u8]) -> Vec<u8> {
    let mut patterns: Vec<Vec<u8>> = Vec::new();
    for v in values.iter().filter(|v| v.len() >= MASK_MIN_LEN) {
        patterns.push(v.to_vec());
        patterns.push(as_terminal_shows(v).to_vec());
    }
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for p in &patterns {
        for s in 0..stream.len().saturating_sub(p.len() - 1) {
            if stream[s..].starts_with(p) {
                runs.push((s, s + p.len()));
            }
        }
    }
    runs.sort();
    let mut joined: Vec<(usize, usize)> = Vec::new();
    for (s, e) in runs {
        match joined.last_mut() {
            Some(last) if s < last.1 => last.1 = last.1.max(e),
            _ => joined.push((s, e)),
        }
    }
    let mut shown = Vec::new();
    let mut at = 0;
    for (s, e) in joined {
        shown.extend_from_slice(&stream[at..s]);
        shown.extend_from_slice(REPLACEMENT);
        at = e;
    }
    shown.extend_from_slice(&stream[at..]);
    shown
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const TOKEN: &[u8] = b"ghp_0123456789abcdefXYZ";

#[test]
fn a_value_is_replaced_and_the_rest_passes_unchanged() {
    let shown = whole(&[TOKEN], b"token: ghp_0123456789abcdefXYZ\r\n$ ");
    assert_eq!(shown, b"token: ***\r\n$ ");
    assert_eq!(whole(&[TOKEN], b"nothing here\r\n"), b"nothing here\r\n");
}

#[test]
fn a_chunk_with_nothing_to_mask_or_hold_comes_back_as_it_is() {
    let mut m = masker(&[TOKEN]);
    let chunk = b"plain output, no value\r\n".to_vec();
    let shown = m.push(&chunk);
    assert!(std::ptr::eq(shown, &chunk[..]), "not copied");
    assert_eq!(m.flush_after(), None);
}

#[test]
fn a_value_split_at_every_boundary_is_masked() {
    let stream = b"before ghp_0123456789abcdefXYZ between ghp_0123456789abcdefXYZ after";
    let expected = b"before *** between *** after".to_vec();
    for a in 0..=stream.len() {
        assert_eq!(
            through(&mut masker(&[TOKEN]), stream, &[a]),
            expected,
            "cut {a}"
        );
        for b in a..=stream.len() {
            let got = through(&mut masker(&[TOKEN]), stream, &[a, b]);
            assert_eq!(got, expected, "cuts {a} {b}");
        }
    }
    // One byte at a time.
    let cuts: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(through(&mut masker(&[TOKEN]), stream, &cuts), expected);
}

#[test]
fn a_value_at_any_offset_in_long_output_is_found_whatever_pairs_the_scan_samples() {
    for at in 0..130 {
        let mut stream = vec![b'z'; 200];
        stream.splice(at..at, TOKEN.iter().copied());
        let mut expected = vec![b'z'; 200];
        expected.splice(at..at, REPLACEMENT.iter().copied());
        assert_eq!(whole(&[TOKEN], &stream), expected, "at {at}");
        // The value running into the end of the chunk, and the next one.
        let cut = at + 3;
        let got = through(&mut masker(&[TOKEN]), &stream, &[cut]);
        assert_eq!(got, expected, "at {at}, cut {cut}");
    }
}

#[test]
fn overlapping_values_are_one_run() {
    let (a, b): (&[u8], &[u8]) = (b"abcdefgh", b"efghijkl");
    assert_eq!(whole(&[a, b], b"<abcdefghijkl>"), b"<***>");
    // Adjacent occurrences stay two.
    assert_eq!(whole(&[a], b"abcdefghabcdefgh"), b"******");
    // Self-overlapping value.
    assert_eq!(whole(&[b"aaaaaaaa"], b"xaaaaaaaaaaax"), b"x***x");
}

#[test]
fn a_value_that_is_a_prefix_of_another_gives_way_to_the_longer() {
    let (short, long): (&[u8], &[u8]) = (b"abcdefgh", b"abcdefghij");
    for values in [[short, long], [long, short]] {
        assert_eq!(whole(&values, b"abcdefghij!"), b"***!");
        assert_eq!(whole(&values, b"abcdefgh!"), b"***!");
        assert_eq!(whole(&values, b"abcdefghi"), b"***i");
        // Split right after the shorter one: the longer still wins.
        // (the `***` may go at once: what follows inside the longer value is swallowed).
        let mut m = masker(&values);
        let mut shown = m.push(b"abcdefgh").to_vec();
        shown.extend_from_slice(m.push(b"ij!"));
        assert_eq!(shown, b"***!");
    }
}

#[test]
fn the_longest_reading_wins_when_a_shorter_value_ends_first() {
    // "bcdefghi" ends before "abcdefghijk" does, and the longer one starts earlier.
    let values: [&[u8]; 2] = [b"bcdefghi", b"abcdefghijk"];
    assert_eq!(whole(&values, b"abcdefghijk"), b"***");
    assert_eq!(whole(&values, b"abcdefghiZZ"), b"a***ZZ");
    // A long value that holds a shorter one twice.
    let values: [&[u8]; 2] = [b"abcdefgh", b"abcdefgh12345678abcdefghZZ"];
    assert_eq!(whole(&values, b"abcdefgh12345678abcdefghZZ"), b"***");
    assert_eq!(
        whole(&values, b"abcdefgh12345678abcdefghQQ"),
        b"***12345678***QQ"
    );
}

#[test]
fn binary_values_and_their_terminal_form_are_masked() {
    let value: &[u8] = b"\x00\xff\x1b[0m\r\x7f\x80\x00";
    let mut stream = b"\x00\x00".to_vec();
    stream.extend_from_slice(value);
    stream.extend_from_slice(b"\xff");
    assert_eq!(whole(&[value], &stream), b"\x00\x00***\xff");
    // A multi-line value `cat` in a pty: each \n became \r\n on the way.
    let key: &[u8] = b"-----BEGIN KEY-----\nAAAABBBB\n-----END KEY-----\n";
    let shown_by_pty: Vec<u8> =
        b"$ cat key\r\n-----BEGIN KEY-----\r\nAAAABBBB\r\n-----END KEY-----\r\n$ ".to_vec();
    assert_eq!(whole(&[key], &shown_by_pty), b"$ cat key\r\n***$ ");
    assert_eq!(whole(&[key], key), b"***");
}

#[test]
fn values_shorter_than_the_minimum_are_never_masked() {
    assert!(Masker::new([&b"1234567"[..], b""]).is_none());
    let mut m = masker(&[b"1234567", b"12345678"]);
    assert_eq!(through(&mut m, b"1234567 12345678", &[]), b"1234567 ***");
}

#[test]
fn held_bytes_wait_by_policy_and_a_flush_lets_them_go() {
    let mut m = masker(&[TOKEN]);
    assert_eq!(m.push(b"$ g"), b"$ ");
    assert_eq!(m.flush_after(), Some(SHORT_HOLD));
    assert_eq!(m.flush(), b"g");
    assert_eq!(m.flush_after(), None);
    assert_eq!(m.push(b"it status\r\n"), b"it status\r\n");

    assert_eq!(m.push(b"ghp_0"), b"");
    assert_eq!(m.flush_after(), Some(LONG_HOLD));
    // The rest arriving before the flush: all of it masked.
    assert_eq!(m.push(b"123456789abcdefXYZ\r\n"), b"***\r\n");
}

#[test]
fn after_a_flush_the_rest_of_a_value_is_still_masked() {
    let mut m = masker(&[TOKEN]);
    assert_eq!(m.push(b"ghp_01"), b"");
    assert_eq!(m.flush(), b"ghp_01");
    assert_eq!(m.push(b"23456789abcdefXYZ tail"), b"*** tail");
    // And the stream goes on normally after.
    assert_eq!(m.push(b" ghp_0123456789abcdefXYZ"), b" ***");
}

#[test]
fn held_bytes_never_exceed_the_longest_value_less_one_and_nothing_grows() {
    let long: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut m = masker(&[TOKEN, long]);
    let (held_cap, pending_cap) = (m.held.capacity(), m.pending.capacity());
    assert!(held_cap >= long.len());
    let mut rng = Rng(0x1234_5678_9abc_def1);
    // Output made of value pieces, so that prefixes are held all the time.
    let pieces: [&[u8]; 5] = [b"0123456789", b"ghp_01", b"abc", long, b"\r\n"];
    let mut out_cap = 0;
    for round in 0..20_000 {
        let mut chunk = Vec::new();
        for _ in 0..rng.below(40) {
            chunk.extend_from_slice(pieces[rng.below(pieces.len())]);
        }
        m.push(&chunk);
        assert!(m.held.len() < long.len(), "held {}", m.held.len());
        assert!(m.pending.len() <= pending_cap);
        if round == 1000 {
            out_cap = m.out.capacity();
        }
    }
    assert_eq!(m.held.capacity(), held_cap, "held never reallocated");
    assert_eq!(
        m.pending.capacity(),
        pending_cap,
        "pending never reallocated"
    );
    // The output buffer settles at the largest chunk it had to copy.
    assert!(m.out.capacity() <= out_cap.max(40 * long.len() + 2 * long.len() + 3));
}

#[test]
fn random_streams_in_random_pieces_match_the_model() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..6000 {
        // Mostly a small alphabet, so that values overlap, repeat and nest often; sometimes a
        // larger one and long streams, so that the scan skips long stretches.
        let (alphabet, longest): (&[u8], usize) = if case % 3 == 0 {
            (b"abcdefghij\n", 700)
        } else {
            (b"ab\n\r", 120)
        };
        let values: Vec<Vec<u8>> = (0..1 + rng.below(4))
            .map(|_| {
                let len = 6 + rng.below(8);
                (0..len)
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect()
            })
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let stream: Vec<u8> = (0..rng.below(longest))
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let mut cuts: Vec<usize> = (0..rng.below(6))
            .map(|_| rng.below(stream.len() + 1))
            .collect();
        cuts.sort();
        let expected = reference(&refs, &stream);
        match Masker::new(refs.iter().copied()) {
            Some(mut m) => {
                let got = through(&mut m, &stream, &cuts);
                assert_eq!(
                    got, expected,
                    "case {case}: values {values:?} stream {stream:?} cuts {cuts:?}"
                );
            }
            None => assert_eq!(expected, stream, "case {case}"),
        }
    }
}

#[test]
fn with_flushes_at_random_no_value_ever_shows_whole() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let alphabet = b"abc\n";
    for case in 0..3000 {
        let values: Vec<Vec<u8>> = (0..1 + rng.below(3))
            .map(|_| {
                let len = 8 + rng.below(6);
                (0..len)
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect()
            })
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let stream: Vec<u8> = (0..rng.below(150))
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let mut m = masker(&refs);
        let (mut shown, mut at) = (Vec::new(), 0);
        while at < stream.len() {
            let to = (at + 1 + rng.below(12)).min(stream.len());
            shown.extend_from_slice(m.push(&stream[at..to]));
            if rng.below(3) == 0 {
                shown.extend_from_slice(m.flush());
            }
            at = to;
        }
        shown.extend_from_slice(m.flush());
        for v in &refs {
            let hit = shown.windows(v.len()).any(|w| w == *v);
            assert!(
                !hit,
                "case {case}: {v:?} shows in {shown:?} (stream {stream:?})"
            );
        }
    }
}

#[test]
fn a_masked_run_among_held_bytes_goes_out_masked_on_a_flush() {
    // "abcdefgh" is whole, but "zzabcdefgh" may still be the start of the longer value.
    let mut m = masker(&[b"abcdefgh", b"zzabcdefghQQ"]);
    assert_eq!(m.push(b"zzabcdefgh"), b"");
    assert_eq!(m.flush(), b"zz***");
    let mut m = masker(&[b"abcdefgh", b"zzabcdefghQQ"]);
    assert_eq!(m.push(b"zzabcdefgh"), b"");
    assert_eq!(m.push(b"Q"), b"");
    assert_eq!(m.push(b"Q!"), b"***!");
}

#[test]
fn the_debug_form_shows_no_value() {
    let m = masker(&[TOKEN]);
    let text = format!("{m:?}");
    assert!(!text.contains("ghp"), "{text}");
}
