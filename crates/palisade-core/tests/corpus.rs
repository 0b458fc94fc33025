//! The default rules against `corpus.txt`: real error message shapes from LLM providers and
//! HTTP/gRPC clients, each with the class it must get. A failure lists every line that moved.

use std::time::Duration;

use palisade_core::{BoxError, Category, class_of};

struct Case<'a> {
    line: usize,
    category: &'a str,
    retryable: bool,
    after: Option<Duration>,
    message: &'a str,
}

fn cases() -> Vec<Case<'static>> {
    include_str!("corpus.txt")
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|(i, l)| {
            let mut parts = l.splitn(3, " | ");
            let (Some(category), Some(retry), Some(message)) =
                (parts.next(), parts.next(), parts.next())
            else {
                panic!("corpus.txt:{}: want `category | retry | message`", i + 1);
            };
            let (retryable, after) = match retry {
                "retry" => (true, None),
                "no retry" => (false, None),
                r => {
                    let secs = r
                        .strip_prefix("retry after ")
                        .and_then(|s| s.strip_suffix('s'))
                        .and_then(|s| s.parse::<f64>().ok())
                        .unwrap_or_else(|| panic!("corpus.txt:{}: bad retry {r:?}", i + 1));
                    (true, Some(Duration::from_secs_f64(secs)))
                }
            };
            Case {
                line: i + 1,
                category,
                retryable,
                after,
                message,
            }
        })
        .collect()
}

#[test]
fn the_corpus_is_classified_as_written() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut moved = Vec::new();
    for c in &cases {
        assert!(
            Category::ALL.iter().any(|k| k.as_str() == c.category),
            "corpus.txt:{}: no category {:?}",
            c.line,
            c.category
        );
        let err: BoxError = c.message.into();
        let class = class_of(&err);
        let got = (class.category.as_str(), class.retryable, class.retry_after);
        if got != (c.category, c.retryable, c.after) {
            moved.push(format!(
                "corpus.txt:{}: want {} retryable={} after={:?}, got {} retryable={} after={:?}: {}",
                c.line, c.category, c.retryable, c.after, got.0, got.1, got.2, c.message
            ));
        }
    }
    assert!(
        moved.is_empty(),
        "{} moved:\n{}",
        moved.len(),
        moved.join("\n")
    );
}

/// A message classified the same when it is the source of another error: the rules walk the
/// chain, so wrapping (as reqwest and tonic do) moves nothing.
#[test]
fn wrapping_moves_nothing() {
    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("calling the model")
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }
    for c in cases() {
        let plain = class_of(&c.message.into());
        let wrapped: BoxError = Box::new(Wrapper(c.message.into()));
        assert_eq!(class_of(&wrapped), plain, "corpus.txt:{}", c.line);
    }
}
