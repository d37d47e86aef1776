//! When and how long to wait before trying a request again: the one policy every registry request follows
//! (manifests, blobs, uploads, token requests, broken download streams).
//!
//! Transient failures (connection errors, 408, 429, 500, 502, 503, 504) are retried a bounded number of times
//! with exponential backoff and jitter, so that many parallel transfers do not hammer a struggling registry in
//! lockstep. `Retry-After` is honoured, within a cap, because rate-limited registries (Docker Hub) mean it; a
//! longer one ends the retries at once with the server's answer. A 401 asks the caller to authenticate again
//! (how often it may is the caller's rule: one new token, one credential refresh).

use std::time::Duration;

use reqwest::StatusCode;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited for: the request fails with the server's answer.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry` (0-based): exponential, capped, with "equal jitter" (half fixed,
    /// half random) so the delay never collapses to zero.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32.checked_shl(retry.min(16)).unwrap_or(u32::MAX));
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// What one attempt of a request came to, as far as retrying is concerned.
#[derive(Debug, Clone, Copy)]
pub enum Attempt<'a> {
    /// The server answered.
    Answered { status: StatusCode, headers: &'a reqwest::header::HeaderMap },
    /// The server answered with something the caller knows may pass (a manifest push refused because a blob
    /// pushed a moment ago is not visible yet).
    Transient,
    /// No answer, or an answer cut off; `retryable`: the failure was on the wire (not a bad URL).
    Broken { retryable: bool },
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Take the answer as it is: a success, or a failure the caller reports.
    Accept,
    /// Try again after this long.
    Wait(Duration),
    /// Authenticate (again) and retry.
    Reauthenticate,
    /// No answer and no retries left: fail.
    GiveUp,
}

impl RetryPolicy {
    /// The verdict on an attempt, after `retries` retries of this request so far.
    pub fn decide(&self, retries: u32, attempt: Attempt<'_>) -> Verdict {
        let left = retries < self.max_retries;
        match attempt {
            Attempt::Answered { status, .. } if status == StatusCode::UNAUTHORIZED => Verdict::Reauthenticate,
            Attempt::Answered { status, headers } if is_retryable_status(status) && left => {
                match retry_after(headers) {
                    Some(wait) if wait > self.max_retry_after => Verdict::Accept,
                    Some(wait) => Verdict::Wait(wait),
                    None => Verdict::Wait(self.backoff(retries)),
                }
            }
            Attempt::Answered { .. } => Verdict::Accept,
            Attempt::Transient if left => Verdict::Wait(self.backoff(retries)),
            Attempt::Transient => Verdict::Accept,
            Attempt::Broken { retryable: true } if left => Verdict::Wait(self.backoff(retries)),
            Attempt::Broken { .. } => Verdict::GiveUp,
        }
    }
}

pub fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        for retry in 0..30 {
            let d = p.backoff(retry);
            assert!(d <= p.max_delay, "{d:?}");
            let floor = (p.base_delay.saturating_mul(1 << retry.min(16))).min(p.max_delay) / 2;
            assert!(d >= floor, "retry {retry}: {d:?} < {floor:?}");
        }
    }

    fn answered(status: u16, retry_after: Option<&str>) -> (StatusCode, reqwest::header::HeaderMap) {
        let mut h = reqwest::header::HeaderMap::new();
        if let Some(v) = retry_after {
            h.insert(reqwest::header::RETRY_AFTER, v.parse().unwrap());
        }
        (StatusCode::from_u16(status).unwrap(), h)
    }

    fn decide(p: &RetryPolicy, retries: u32, status: u16, retry_after: Option<&str>) -> Verdict {
        let (status, headers) = answered(status, retry_after);
        p.decide(retries, Attempt::Answered { status, headers: &headers })
    }

    #[test]
    fn answers_are_classified_once_for_every_request() {
        let p = RetryPolicy::default();
        for status in [200, 201, 202, 206, 400, 403, 404, 405, 416] {
            assert_eq!(decide(&p, 0, status, None), Verdict::Accept, "{status}");
        }
        assert_eq!(decide(&p, 0, 401, None), Verdict::Reauthenticate);
        for status in [408, 429, 500, 502, 503, 504] {
            let Verdict::Wait(d) = decide(&p, 0, status, None) else { panic!("{status} is retried") };
            assert!(d >= p.base_delay / 2 && d <= p.base_delay, "{status}: {d:?}");
            // Out of retries: the answer stands, for the caller to report.
            assert_eq!(decide(&p, p.max_retries, status, None), Verdict::Accept, "{status}");
        }
    }

    #[test]
    fn retry_after_is_waited_for_within_the_cap_and_ends_the_retries_beyond_it() {
        let p = RetryPolicy::default();
        assert_eq!(decide(&p, 0, 429, Some("3")), Verdict::Wait(Duration::from_secs(3)));
        assert_eq!(decide(&p, 2, 503, Some("0")), Verdict::Wait(Duration::ZERO));
        assert_eq!(decide(&p, 0, 429, Some("121")), Verdict::Accept);
        let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
        assert_eq!(decide(&p, 0, 503, Some(&date)), Verdict::Accept);
        // A header that is neither seconds nor a date is ignored: the backoff applies.
        assert!(matches!(decide(&p, 0, 503, Some("soon")), Verdict::Wait(d) if d <= p.base_delay));
    }

    #[test]
    fn a_token_service_that_rate_limits_is_waited_for_like_any_registry_request() {
        // Token requests go through the same verdict: a 429 from the realm with Retry-After is waited for, and a
        // refusal (401 from the realm) asks for authentication, which the token fetch turns into "bad credentials".
        let p = RetryPolicy::default();
        assert_eq!(decide(&p, 0, 429, Some("2")), Verdict::Wait(Duration::from_secs(2)));
        assert_eq!(decide(&p, 0, 401, None), Verdict::Reauthenticate);
    }

    #[test]
    fn broken_attempts_are_retried_while_retries_last_and_only_on_the_wire() {
        let p = RetryPolicy { max_retries: 2, ..RetryPolicy::default() };
        assert!(matches!(p.decide(0, Attempt::Broken { retryable: true }), Verdict::Wait(_)));
        assert!(matches!(p.decide(1, Attempt::Broken { retryable: true }), Verdict::Wait(_)));
        assert_eq!(p.decide(2, Attempt::Broken { retryable: true }), Verdict::GiveUp);
        assert_eq!(p.decide(0, Attempt::Broken { retryable: false }), Verdict::GiveUp);
        assert!(matches!(p.decide(0, Attempt::Transient), Verdict::Wait(_)));
        assert_eq!(p.decide(2, Attempt::Transient), Verdict::Accept);
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
    }
}
