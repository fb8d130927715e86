//! The LLM tokens a response reports it used, read as it streams by, never
//! buffered: JSON and server-sent events alike carry a count under a known
//! key (Gemini's `usageMetadata.totalTokenCount`, OpenAI's
//! `usage.total_tokens`, or the last name of a room's `usage_path`).
//! Streams repeat it, growing, in their events: the last one seen is the
//! total.

use std::sync::Arc;

/// The keys a count follows, with their quotes.
const KEYS: [&[u8]; 2] = [b"\"totalTokenCount\"", b"\"total_tokens\""];

/// The keys a room reads usage under, quoted.
#[derive(Debug, Clone)]
pub struct UsageKeys(Arc<[Vec<u8>]>);

impl UsageKeys {
    /// `key` alone, or Gemini's and OpenAI's.
    pub fn new(key: Option<&str>) -> UsageKeys {
        let quoted = |k: &[u8]| [b"\"", k, b"\""].concat();
        UsageKeys(match key {
            Some(k) => Arc::from(vec![quoted(k.as_bytes())]),
            None => KEYS.iter().map(|k| k.to_vec()).collect(),
        })
    }
}

impl Default for UsageKeys {
    fn default() -> Self {
        UsageKeys::new(None)
    }
}
/// Bytes kept from one chunk's end for a key cut by the next chunk.
const CARRY: usize = 48;

/// Reads usage from a response's body chunks.
#[derive(Debug, Default)]
pub struct TokenUsage {
    keys: UsageKeys,
    carry: Vec<u8>,
    total: Option<u64>,
}

impl TokenUsage {
    /// Reads the count under `keys`.
    pub fn new(keys: &UsageKeys) -> TokenUsage {
        TokenUsage {
            keys: keys.clone(),
            carry: Vec::new(),
            total: None,
        }
    }

    /// Looks at the next chunk.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut window = std::mem::take(&mut self.carry);
        window.extend_from_slice(chunk);
        let mut at = 0;
        while at < window.len() {
            let Some((start, key)) = self
                .keys
                .0
                .iter()
                .filter_map(|k| find(&window[at..], k).map(|i| (at + i, k.len())))
                .min()
            else {
                break;
            };
            match number_after(&window[start + key..]) {
                Number::Found(n) => self.total = Some(n),
                // Cut by the chunk's end: read it again with the next chunk
                // (an endless "number" is given up on, never kept growing).
                Number::Incomplete if window.len() - start <= 2 * CARRY => {
                    self.carry = window[start..].to_vec();
                    return;
                }
                Number::Incomplete | Number::None => {}
            }
            at = start + key;
        }
        let keep = window.len().saturating_sub(CARRY);
        self.carry = window[keep..].to_vec();
    }

    /// The tokens the response reported, if it did.
    pub fn total(&self) -> Option<u64> {
        self.total
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

enum Number {
    Found(u64),
    Incomplete,
    None,
}

/// `  :  123` after a key.
fn number_after(rest: &[u8]) -> Number {
    let mut i = 0;
    let skip = |i: &mut usize| {
        while rest.get(*i).is_some_and(|b| b.is_ascii_whitespace()) {
            *i += 1;
        }
    };
    skip(&mut i);
    match rest.get(i) {
        None => return Number::Incomplete,
        Some(b':') => i += 1,
        Some(_) => return Number::None,
    }
    skip(&mut i);
    let digits = rest[i.min(rest.len())..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if i + digits >= rest.len() {
        return Number::Incomplete;
    }
    if digits == 0 || digits > 18 {
        return Number::None;
    }
    std::str::from_utf8(&rest[i..i + digits])
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Number::None, Number::Found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(chunks: &[&str]) -> Option<u64> {
        let mut u = TokenUsage::default();
        for c in chunks {
            u.feed(c.as_bytes());
        }
        u.total()
    }

    #[test]
    fn gemini_and_openai_counts_are_read_whole_or_in_pieces() {
        let gemini =
            r#"{"candidates":[],"usageMetadata":{"promptTokenCount":5,"totalTokenCount": 1234}}"#;
        assert_eq!(read(&[gemini]), Some(1234));
        for cut in 1..gemini.len() {
            assert_eq!(
                read(&[&gemini[..cut], &gemini[cut..]]),
                Some(1234),
                "cut at {cut}"
            );
        }
        assert_eq!(
            read(&[r#"{"usage":{"prompt_tokens":3,"total_tokens":42}}"#]),
            Some(42)
        );
    }

    #[test]
    fn a_usage_path_reads_its_own_key_only() {
        let mut u = TokenUsage::new(&UsageKeys::new(Some("completion_tokens")));
        u.feed(br#"{"usage":{"total_tokens":42,"completion_tokens":17}}"#);
        assert_eq!(u.total(), Some(17));
    }

    #[test]
    fn a_stream_reports_its_last_count_and_silence_reports_none() {
        let sse = [
            "data: {\"usageMetadata\":{\"totalTokenCount\":10}}\n\n",
            "data: {\"usageMetadata\":{\"totalTokenCount\":25}}\n\n",
            "data: {\"usageMetadata\":{\"totalTokenCount\":61}}\n\n",
        ];
        assert_eq!(read(&sse), Some(61));
        assert_eq!(read(&["{\"text\":\"no usage here\"}"]), None);
        assert_eq!(read(&["\"totalTokenCount\": \"many\"}"]), None);
    }
}
