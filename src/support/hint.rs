//! What the user can do about an error, carried by the error itself.
//!
//! Every error type of the library implements `Hint`. An error that wraps another one asks the inner error
//! first, so the most specific advice wins. The command edge (`commands::Failure`) only accepts errors that
//! implement it, so a new error type without a hint does not compile into a command rather than silently
//! losing its advice; the chain is then printed generically, without asking any error what type it is.

/// Advice for the person who has to fix what went wrong; `None` when the message says it all.
pub trait Hint: std::error::Error + Send + Sync + 'static {
    fn hint(&self) -> Option<String>;
}

/// Errors from std and other crates that reach a command directly: their messages stand alone.
macro_rules! no_hint {
    ($($t:ty),* $(,)?) => {
        $(impl Hint for $t {
            fn hint(&self) -> Option<String> {
                None
            }
        })*
    };
}

no_hint!(std::io::Error, tokio::task::JoinError, serde_yaml_ng::Error);
