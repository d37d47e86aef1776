//! One line for an error and all its causes, for lists of failures (several images, several problems).

/// `error: cause: cause …`
pub fn chain_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
