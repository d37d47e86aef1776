//! The error every command returns: a chain of messages (outermost first) and the hint of the error at its
//! root, taken when that error entered the command (`From` for any `Hint` error, or `Failure::user`).
//!
//! Context is added with `Explain`, which keeps the hint; `anyhow::Context` would bury it in a chain that can
//! only be searched by downcasting, which is what this type replaces.

use std::fmt::Display;

use crate::support::hint::Hint;

#[derive(Debug)]
pub struct Failure {
    chain: anyhow::Error,
    hint: Option<String>,
}

impl Failure {
    /// A failure whose message is complete as it stands, with what the user can do about it.
    pub fn user(message: impl Into<String>, hint: impl Into<String>) -> Failure {
        Failure { chain: anyhow::Error::msg(message.into()), hint: Some(hint.into()) }
    }

    /// A failure with a message and no advice beyond it.
    pub fn message(message: impl Into<String>) -> Failure {
        Failure { chain: anyhow::Error::msg(message.into()), hint: None }
    }

    /// The outermost message.
    pub fn message_text(&self) -> String {
        self.chain.to_string()
    }

    /// The messages under the outermost one, outermost first.
    pub fn causes(&self) -> Vec<String> {
        self.chain.chain().skip(1).map(|c| c.to_string()).collect()
    }

    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// This failure, under a message saying what was being done.
    pub fn explained(self, what: impl Display + Send + Sync + 'static) -> Failure {
        Failure { chain: self.chain.context(what), hint: self.hint }
    }
}

impl<E: Hint> From<E> for Failure {
    fn from(e: E) -> Failure {
        let hint = e.hint();
        Failure { chain: anyhow::Error::new(e), hint }
    }
}

impl Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.chain)
    }
}

/// `Result<T, Failure>` for commands.
pub type Outcome<T = ()> = Result<T, Failure>;

/// Add what was being done to an error, keeping its hint.
pub trait Explain<T> {
    fn explain(self, what: impl Display + Send + Sync + 'static) -> Outcome<T>;
    fn explain_with<D: Display + Send + Sync + 'static>(self, what: impl FnOnce() -> D) -> Outcome<T>;
}

impl<T, E: Into<Failure>> Explain<T> for Result<T, E> {
    fn explain(self, what: impl Display + Send + Sync + 'static) -> Outcome<T> {
        self.map_err(|e| e.into().explained(what))
    }
    fn explain_with<D: Display + Send + Sync + 'static>(self, what: impl FnOnce() -> D) -> Outcome<T> {
        self.map_err(|e| e.into().explained(what()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("inner went wrong")]
    struct Inner;

    impl Hint for Inner {
        fn hint(&self) -> Option<String> {
            Some("do the inner thing".into())
        }
    }

    #[test]
    fn the_root_errors_hint_survives_every_context() {
        let r: Result<(), Inner> = Err(Inner);
        let f = r.explain("middle").explain_with(|| "outer").unwrap_err();
        assert_eq!(f.message_text(), "outer");
        assert_eq!(f.causes(), ["middle", "inner went wrong"]);
        assert_eq!(f.hint(), Some("do the inner thing"));
    }

    #[test]
    fn a_user_failure_keeps_its_hint_under_context() {
        let r: Outcome = Err(Failure::user("bad flag", "write it so"));
        let f = r.explain("reading flags").unwrap_err();
        assert_eq!(f.message_text(), "reading flags");
        assert_eq!(f.causes(), ["bad flag"]);
        assert_eq!(f.hint(), Some("write it so"));
    }
}
