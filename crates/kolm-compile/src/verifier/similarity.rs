//! Text normalization and similarity: ROUGE-L F1 over tokens and normalized
//! edit distance over characters. Both are symmetric, in [0, 1], and 1 for
//! equal inputs.

/// Trims, collapses every run of whitespace to one space and lower-cases.
pub fn normalize(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Tokens for ROUGE-L: each run of alphanumeric characters is a token, and
/// so is each other non-space character. Lower-cased.
pub fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in s.chars() {
        if c.is_alphanumeric() {
            cur.extend(c.to_lowercase());
        } else {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            if !c.is_whitespace() {
                out.push(c.to_string());
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// ROUGE-L F1 (β = 1) of the token sequences of `a` and `b`: the longest
/// common subsequence over both lengths. Two empty texts score 1.
pub fn rouge_l(a: &str, b: &str) -> f64 {
    let (x, y) = (tokens(a), tokens(b));
    if x.is_empty() && y.is_empty() {
        return 1.0;
    }
    if x.is_empty() || y.is_empty() {
        return 0.0;
    }
    let lcs = lcs_len(&x, &y) as f64;
    let (p, r) = (lcs / y.len() as f64, lcs / x.len() as f64);
    if lcs == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

fn lcs_len<T: PartialEq>(x: &[T], y: &[T]) -> usize {
    let mut prev = vec![0usize; y.len() + 1];
    let mut cur = vec![0usize; y.len() + 1];
    for xi in x {
        for (j, yj) in y.iter().enumerate() {
            cur[j + 1] = if xi == yj {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[y.len()]
}

/// `1 − levenshtein(a, b) / max(len a, len b)` over characters. Two empty
/// texts score 1.
pub fn edit_similarity(a: &str, b: &str) -> f64 {
    let (x, y): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let max = x.len().max(y.len());
    if max == 0 {
        return 1.0;
    }
    let mut prev: Vec<usize> = (0..=y.len()).collect();
    let mut cur = vec![0usize; y.len() + 1];
    for (i, xi) in x.iter().enumerate() {
        cur[0] = i + 1;
        for (j, yj) in y.iter().enumerate() {
            let sub = prev[j] + usize::from(xi != yj);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    1.0 - prev[y.len()] as f64 / max as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        assert_eq!(normalize("  Hello \n\t World "), "hello world");
        assert_eq!(tokens("a-b, Cd"), ["a", "-", "b", ",", "cd"]);
        assert_eq!(rouge_l("the cat sat", "the cat sat"), 1.0);
        // LCS("the cat sat on", "the dog sat") = 2 ("the", "sat"): P=2/3, R=2/4.
        let r = rouge_l("the cat sat on", "the dog sat");
        assert!((r - 2.0 * (2.0 / 3.0) * 0.5 / (2.0 / 3.0 + 0.5)).abs() < 1e-12);
        assert_eq!(rouge_l("abc", "xyz"), 0.0);
        assert_eq!(edit_similarity("kitten", "sitting"), 1.0 - 3.0 / 7.0);
        assert_eq!(edit_similarity("", ""), 1.0);
        assert_eq!(edit_similarity("a", ""), 0.0);
    }

    proptest! {
        #[test]
        fn bounded_symmetric_reflexive(a in ".{0,40}", b in ".{0,40}") {
            for f in [rouge_l, edit_similarity] {
                let s = f(&a, &b);
                prop_assert!((0.0..=1.0).contains(&s));
                prop_assert!((s - f(&b, &a)).abs() < 1e-12);
                prop_assert_eq!(f(&a, &a), 1.0);
            }
        }
    }
}
