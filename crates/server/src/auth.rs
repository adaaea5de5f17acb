//! Optional bearer tokens: read-write tokens and read-only tokens, several of each so that they can be
//! rotated (add the new one, move the clients, remove the old one).
//!
//! With no token configured the API is open. With any, every request except `/healthz` needs
//! `Authorization: Bearer <token>` (`/metrics` and unknown routes included, so an anonymous client
//! learns nothing, not even which routes exist):
//!
//! ```text
//! no Authorization header, or not a bearer one   401 unauthorized   WWW-Authenticate: Bearer
//! a token that is not configured                 401 unauthorized   WWW-Authenticate: Bearer error="invalid_token"
//! a read-only token, method other than GET/HEAD  403 forbidden      WWW-Authenticate: Bearer error="insufficient_scope"
//! ```
//!
//! Invariants:
//! - A presented token is compared with every configured token, in constant time per comparison
//!   (`subtle::ConstantTimeEq`) and without stopping at the first match, so the time taken does not
//!   tell how much of a token was right nor which token matched. It does tell whether the lengths
//!   differ (`ct_eq` on slices of different lengths returns at once): use tokens of one length.
//! - A token is never logged, never part of an error message, never shown by `Debug`.
//! - An empty token is never accepted: empty entries of a list are skipped, and a source that is set
//!   but yields no token is an error rather than an open API.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::{Choice, ConstantTimeEq};

use crate::error::ApiError;

/// Read-write tokens, comma-separated.
pub const ENV_TOKENS: &str = "FERRY_TOKENS";
/// Read-only tokens, comma-separated.
pub const ENV_READ_TOKENS: &str = "FERRY_READ_TOKENS";
/// A file of read-write tokens, one per line.
pub const ENV_TOKENS_FILE: &str = "FERRY_TOKENS_FILE";
/// A file of read-only tokens, one per line.
pub const ENV_READ_TOKENS_FILE: &str = "FERRY_READ_TOKENS_FILE";

/// A configuration of tokens that cannot be used. Messages name the variable, file and position of a
/// bad token, never the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// A token with a character that an `Authorization` header cannot carry as is.
    #[error("{origin}: a token must be visible ASCII without spaces (`!` to `~`)")]
    Invalid {
        /// Where the token came from: `FERRY_TOKENS entry 2`, `/run/secrets/tokens line 3`.
        origin: String,
    },
    /// A variable or file that is set but holds no token.
    #[error("{origin} is set but holds no token")]
    Empty {
        /// The variable or file.
        origin: String,
    },
    /// Both a variable and its `_FILE` variant are set.
    #[error("set {var} or {file_var}, not both")]
    Conflict {
        /// The list variable.
        var: &'static str,
        /// The file variable.
        file_var: &'static str,
    },
    /// A variable that is not valid UTF-8.
    #[error("{var} is not valid UTF-8")]
    NotUnicode {
        /// The variable.
        var: &'static str,
    },
    /// A token file that cannot be read.
    #[error("{var}: cannot read `{path}`: {source}")]
    ReadFile {
        /// The variable naming the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What a request's token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    ReadWrite,
    ReadOnly,
}

/// The bearer tokens a server accepts. `Tokens::default()` has none: the API is open.
#[derive(Clone, Default)]
pub struct Tokens {
    read_write: Vec<Box<[u8]>>,
    read_only: Vec<Box<[u8]>>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Counts only: a Debug print ends up in logs.
        f.debug_struct("Tokens")
            .field("read_write", &self.read_write.len())
            .field("read_only", &self.read_only.len())
            .finish()
    }
}

fn check_token(token: &str, origin: impl FnOnce() -> String) -> Result<Box<[u8]>, TokenError> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::Invalid { origin: origin() });
    }
    Ok(token.as_bytes().into())
}

impl Tokens {
    /// Tokens given directly.
    ///
    /// # Errors
    /// [`TokenError::Invalid`] for an empty token or one with a character other than visible ASCII.
    pub fn new<I, J>(read_write: I, read_only: J) -> Result<Self, TokenError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
        J: IntoIterator,
        J::Item: AsRef<str>,
    {
        let read_write = read_write
            .into_iter()
            .enumerate()
            .map(|(i, t)| check_token(t.as_ref(), || format!("read-write token {}", i + 1)))
            .collect::<Result<_, _>>()?;
        let read_only = read_only
            .into_iter()
            .enumerate()
            .map(|(i, t)| check_token(t.as_ref(), || format!("read-only token {}", i + 1)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            read_write,
            read_only,
        })
    }

    /// Tokens from the environment: `FERRY_TOKENS` and `FERRY_READ_TOKENS` (comma-separated), or
    /// `FERRY_TOKENS_FILE` and `FERRY_READ_TOKENS_FILE` (files of one token per line). Spaces around a
    /// token, empty entries and blank lines are ignored; a variable set to the empty string counts as
    /// unset. None set: no tokens, the API is open.
    ///
    /// # Errors
    /// See [`TokenError`]: a bad token, a variable and its `_FILE` variant both set, a source that holds
    /// no token, a file that cannot be read, a variable that is not UTF-8.
    pub fn from_env() -> Result<Self, TokenError> {
        let mut vars = HashMap::new();
        for var in [ENV_TOKENS, ENV_READ_TOKENS, ENV_TOKENS_FILE, ENV_READ_TOKENS_FILE] {
            if let Some(value) = std::env::var_os(var) {
                let value = value.into_string().map_err(|_| TokenError::NotUnicode { var })?;
                vars.insert(var, value);
            }
        }
        Self::from_vars(|name| vars.get(name).cloned())
    }

    /// [`Tokens::from_env`] with the variables looked up by `var` rather than in the process
    /// environment (a config file, a test).
    ///
    /// # Errors
    /// As [`Tokens::from_env`].
    pub fn from_vars(mut var: impl FnMut(&str) -> Option<String>) -> Result<Self, TokenError> {
        let mut get = |name: &str| var(name).filter(|v| !v.is_empty());
        let read_write = source(ENV_TOKENS, get(ENV_TOKENS), ENV_TOKENS_FILE, get(ENV_TOKENS_FILE))?;
        let read_only = source(
            ENV_READ_TOKENS,
            get(ENV_READ_TOKENS),
            ENV_READ_TOKENS_FILE,
            get(ENV_READ_TOKENS_FILE),
        )?;
        Ok(Self {
            read_write,
            read_only,
        })
    }

    /// True when any token is configured, so that requests need one.
    pub fn is_enabled(&self) -> bool {
        !self.read_write.is_empty() || !self.read_only.is_empty()
    }

    /// Number of read-write tokens.
    pub fn read_write_count(&self) -> usize {
        self.read_write.len()
    }

    /// Number of read-only tokens.
    pub fn read_only_count(&self) -> usize {
        self.read_only.len()
    }

    /// What the `Authorization` header allows, `None` when no token is configured.
    ///
    /// # Errors
    /// [`ApiError::MissingToken`], [`ApiError::InvalidToken`].
    pub(crate) fn access(&self, header: Option<&HeaderValue>) -> Result<Option<Access>, ApiError> {
        if !self.is_enabled() {
            return Ok(None);
        }
        let presented = header.and_then(bearer).ok_or(ApiError::MissingToken)?;
        self.access_token(presented)
    }

    /// What a presented token allows, `None` when no token is configured (the wire protocol's HELLO
    /// carries the token itself; an empty one is missing).
    ///
    /// # Errors
    /// [`ApiError::MissingToken`], [`ApiError::InvalidToken`].
    pub(crate) fn access_token(&self, presented: &[u8]) -> Result<Option<Access>, ApiError> {
        if !self.is_enabled() {
            return Ok(None);
        }
        if presented.is_empty() {
            return Err(ApiError::MissingToken);
        }
        let any = |tokens: &[Box<[u8]>]| {
            tokens
                .iter()
                .fold(Choice::from(0), |found, t| found | t.ct_eq(presented))
        };
        // Both lists are always compared in full: no early exit tells which list (or token) matched.
        let (rw, ro) = (any(&self.read_write), any(&self.read_only));
        if bool::from(rw) {
            Ok(Some(Access::ReadWrite))
        } else if bool::from(ro) {
            Ok(Some(Access::ReadOnly))
        } else {
            Err(ApiError::InvalidToken)
        }
    }

    /// Whether a request with `header` may use `method`.
    ///
    /// # Errors
    /// [`ApiError::MissingToken`], [`ApiError::InvalidToken`], [`ApiError::ReadOnlyToken`].
    pub(crate) fn authorize(&self, header: Option<&HeaderValue>, method: &Method) -> Result<(), ApiError> {
        match self.access(header)? {
            Some(Access::ReadOnly) if method != Method::GET && method != Method::HEAD => {
                Err(ApiError::ReadOnlyToken {
                    method: method.clone(),
                })
            }
            _ => Ok(()),
        }
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 7235), or `None` for another scheme.
fn bearer(value: &HeaderValue) -> Option<&[u8]> {
    let value = value.as_bytes();
    let scheme = value.get(..6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || value.get(6) != Some(&b' ') {
        return None;
    }
    let token = value[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The tokens of a list variable or of a file, whichever is set.
fn source(
    var: &'static str,
    list: Option<String>,
    file_var: &'static str,
    file: Option<String>,
) -> Result<Vec<Box<[u8]>>, TokenError> {
    match (list, file) {
        (Some(_), Some(_)) => Err(TokenError::Conflict { var, file_var }),
        (None, None) => Ok(Vec::new()),
        (Some(list), None) => parse_entries(list.split(','), var, |i| format!("{var} entry {i}")),
        (None, Some(path)) => {
            let path = Path::new(&path);
            let text = std::fs::read_to_string(path).map_err(|source| TokenError::ReadFile {
                var: file_var,
                path: path.to_path_buf(),
                source,
            })?;
            let shown = format!("{file_var} (`{}`)", path.display());
            parse_entries(text.lines(), &shown, |i| {
                format!("{file_var} (`{}`) line {i}", path.display())
            })
        }
    }
}

/// Trimmed, non-empty entries as tokens; `at(n)` names entry `n` (1-based, blank ones counted).
fn parse_entries<'a>(
    entries: impl Iterator<Item = &'a str>,
    origin: &str,
    at: impl Fn(usize) -> String,
) -> Result<Vec<Box<[u8]>>, TokenError> {
    let mut tokens = Vec::new();
    for (i, entry) in entries.enumerate() {
        let entry = entry.trim();
        if !entry.is_empty() {
            tokens.push(check_token(entry, || at(i + 1))?);
        }
    }
    if tokens.is_empty() {
        return Err(TokenError::Empty {
            origin: origin.to_string(),
        });
    }
    Ok(tokens)
}

/// The middleware: lets `/healthz` through, refuses every other request that `tokens` do not allow.
pub(crate) async fn require(State(tokens): State<Arc<Tokens>>, req: Request, next: Next) -> Response {
    if req.uri().path() != "/healthz"
        && let Err(refused) = tokens.authorize(req.headers().get(AUTHORIZATION), req.method())
    {
        return refused.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(v: &str) -> HeaderValue {
        HeaderValue::from_str(v).unwrap()
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_a_token() {
        assert_eq!(bearer(&header("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&header("bearer  abc ")), Some(&b"abc"[..]));
        assert_eq!(bearer(&header("BEARER abc")), Some(&b"abc"[..]));
        for bad in ["Bearer", "Bearer ", "Bearerabc", "Basic YWJj", "", "Token abc"] {
            assert_eq!(bearer(&header(bad)), None, "{bad}");
        }
    }

    #[test]
    fn read_write_wins_over_read_only_and_unknown_is_refused() {
        let tokens = Tokens::new(["rw1", "rw2"], ["ro1", "rw2"]).unwrap();
        let access = |v: &str| tokens.access(Some(&header(v)));
        assert_eq!(access("Bearer rw1").unwrap(), Some(Access::ReadWrite));
        assert_eq!(access("Bearer rw2").unwrap(), Some(Access::ReadWrite));
        assert_eq!(access("Bearer ro1").unwrap(), Some(Access::ReadOnly));
        assert!(matches!(access("Bearer rw"), Err(ApiError::InvalidToken)));
        assert!(matches!(access("Bearer rw11"), Err(ApiError::InvalidToken)));
        assert!(matches!(tokens.access(None), Err(ApiError::MissingToken)));
        assert_eq!(Tokens::default().access(None).unwrap(), None);
    }

    #[test]
    fn bad_tokens_are_named_by_position_not_shown() {
        let err = Tokens::new(["ok", "has space"], Vec::<String>::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "read-write token 2: a token must be visible ASCII without spaces (`!` to `~`)"
        );
        assert!(Tokens::new([""], Vec::<String>::new()).is_err());
        assert!(Tokens::new(Vec::<String>::new(), ["é"]).is_err());
        assert_eq!(
            format!("{:?}", Tokens::new(["secret"], ["s2"]).unwrap()),
            "Tokens { read_write: 1, read_only: 1 }"
        );
    }
}
