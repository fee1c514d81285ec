//! Turning sampled tokens into text deltas: bytes are held until they form
//! whole UTF-8 characters, and text that could be the start of a stop
//! sequence is held until it is known not to be. A stop sequence is never
//! emitted, even when it spans several tokens.

/// Assembles token bytes into text deltas and watches for stop sequences.
#[derive(Debug, Default)]
pub struct TextAssembler {
    stops: Vec<String>,
    /// Bytes of an incomplete UTF-8 character.
    partial: Vec<u8>,
    /// Decoded text not yet emitted (it may begin a stop sequence).
    held: String,
    stopped: bool,
}

/// What one push produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Text safe to send now (may be empty).
    pub text: String,
    /// A stop sequence was completed: generation must end, `text` is the last.
    pub stopped: bool,
}

impl TextAssembler {
    /// An assembler for the given stop sequences (empty ones are ignored).
    pub fn new(stops: &[String]) -> Self {
        TextAssembler {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ..Self::default()
        }
    }

    /// Adds the bytes of one token.
    pub fn push(&mut self, bytes: &[u8]) -> Delta {
        if self.stopped {
            return Delta {
                text: String::new(),
                stopped: true,
            };
        }
        self.partial.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.partial) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            // Invalid bytes (not just incomplete): replace them and go on.
            Err(_) => {
                let lossy = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                self.held.push_str(&lossy);
                return self.release();
            }
        };
        let complete: Vec<u8> = self.partial.drain(..valid).collect();
        self.held
            .push_str(std::str::from_utf8(&complete).expect("checked above"));
        self.release()
    }

    /// Everything still held, at the end of generation (no stop matched).
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let mut rest = std::mem::take(&mut self.held);
        if !self.partial.is_empty() {
            rest.push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.partial)));
        }
        rest
    }

    fn release(&mut self) -> Delta {
        // A complete stop sequence: emit what precedes it and stop.
        let first_stop = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first_stop {
            self.held.truncate(at);
            self.stopped = true;
            return Delta {
                text: std::mem::take(&mut self.held),
                stopped: true,
            };
        }
        // Hold back the longest tail that could still grow into a stop.
        let hold = self
            .stops
            .iter()
            .map(|s| longest_suffix_prefix(&self.held, s))
            .max()
            .unwrap_or(0);
        let emit_to = self.held.len() - hold;
        let text: String = self.held.drain(..emit_to).collect();
        Delta {
            text,
            stopped: false,
        }
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`,
/// on a character boundary.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let max = text.len().min(stop.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| {
            let start = text.len() - n;
            text.is_char_boundary(start) && stop.starts_with(&text[start..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&[u8]]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut a = TextAssembler::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let d = a.push(p);
            out.push_str(&d.text);
            if d.stopped {
                return (out, true);
            }
        }
        out.push_str(&a.finish());
        (out, false)
    }

    #[test]
    fn utf8_characters_are_never_split() {
        let snowman = "☃".as_bytes();
        let mut a = TextAssembler::new(&[]);
        assert_eq!(a.push(&snowman[..1]).text, "");
        assert_eq!(a.push(&snowman[1..2]).text, "");
        assert_eq!(a.push(&snowman[2..]).text, "☃");
    }

    #[test]
    fn stops_across_token_boundaries_are_not_emitted() {
        assert_eq!(
            run(&["END"], &[b"abc E", b"N", b"D tail"]),
            ("abc ".into(), true)
        );
        assert_eq!(run(&["\n\n"], &[b"one\n", b"\ntwo"]), ("one".into(), true));
    }

    #[test]
    fn a_false_start_is_released() {
        assert_eq!(run(&["END"], &[b"EN", b"ough"]), ("ENough".into(), false));
        assert_eq!(run(&["END"], &[b"x EN"]), ("x EN".into(), false));
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        assert_eq!(run(&["b", "a"], &[b"xxab"]), ("xx".into(), true));
    }
}
