//! Limits on what a request may carry, and the checks that name them.
//!
//! Every limit has a default that suits a general-purpose store and can be raised
//! or lowered in the node's `[limits]` configuration section.

use serde::{Deserialize, Serialize};

/// Configurable request limits of a shard node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Most operations (compares plus writes) in one transaction, and most
    /// key-values in one import batch.
    pub max_batch_ops: usize,
    /// Most namespaces one shard holds.
    pub max_namespaces: usize,
    /// Largest page a scan returns, and the page size when a scan asks for 0.
    pub max_scan_limit: usize,
    /// Writes are refused while the data directory's file system has less free
    /// space than this, so a full disk is reported before the engine fails.
    pub min_free_disk_bytes: u64,
    /// How long a write to a sync namespace waits for a standby's confirmation
    /// before it is answered as not acknowledged.
    pub sync_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: 4 * 1024,
            max_value_bytes: 1024 * 1024,
            max_batch_ops: 1024,
            max_namespaces: 10_000,
            max_scan_limit: 10_000,
            min_free_disk_bytes: 64 * 1024 * 1024,
            sync_timeout_ms: 5_000,
        }
    }
}

/// A request that breaks a limit or a rule; the message names which.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LimitError {
    /// The key is empty.
    #[error("key must not be empty")]
    EmptyKey,
    /// The key is larger than `max_key_bytes`.
    #[error("key is {size} bytes; the limit max_key_bytes is {limit}")]
    KeyTooLarge {
        /// Size of the offending key.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The value is larger than `max_value_bytes`.
    #[error("value is {size} bytes; the limit max_value_bytes is {limit}")]
    ValueTooLarge {
        /// Size of the offending value.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The batch has more operations than `max_batch_ops`.
    #[error("request has {count} operations; the limit max_batch_ops is {limit}")]
    BatchTooLarge {
        /// Number of operations in the request.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The scan asked for more than `max_scan_limit` keys.
    #[error("scan limit {requested} exceeds max_scan_limit {limit}")]
    ScanTooLarge {
        /// Requested page size.
        requested: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A digest request asked to wait longer than allowed.
    #[error("wait_ms {requested} exceeds the limit of {limit} ms")]
    WaitTooLong {
        /// Requested wait.
        requested: u64,
        /// The limit.
        limit: u64,
    },
    /// The namespace name breaks the naming rule.
    #[error(
        "invalid namespace name {name:?}: use 1 to {max} characters from a-z, 0-9, '-', '_' and '.', starting with a letter or digit"
    )]
    BadNamespaceName {
        /// The offending name.
        name: String,
        /// Longest allowed name.
        max: usize,
    },
    /// A field that must be set is missing.
    #[error("field {field} is required")]
    MissingField {
        /// Name of the missing field.
        field: &'static str,
    },
    /// Two fields that exclude each other are both set.
    #[error("{message}")]
    Conflict {
        /// What conflicts with what.
        message: String,
    },
    /// A field's content cannot be decoded.
    #[error("malformed request: {0}")]
    Malformed(String),
}

/// Largest version an imported or replicated key may carry, and largest
/// change sequence number a rebuild may set: 2^62, leaving room for 2^62
/// further writes, so version and sequence arithmetic can never overflow.
pub const MAX_VERSION: u64 = 1 << 62;

pub use meridian_proto::names::MAX_NAMESPACE_NAME;

/// Checks a namespace name (the rule is `meridian_proto::names`).
pub fn validate_namespace_name(name: &str) -> Result<(), LimitError> {
    if !meridian_proto::names::is_namespace_name(name) {
        return Err(LimitError::BadNamespaceName {
            name: name.chars().take(80).collect(),
            max: MAX_NAMESPACE_NAME,
        });
    }
    Ok(())
}

impl Limits {
    /// Checks a key against `max_key_bytes`.
    pub fn check_key(&self, key: &[u8]) -> Result<(), LimitError> {
        if key.is_empty() {
            return Err(LimitError::EmptyKey);
        }
        if key.len() > self.max_key_bytes {
            return Err(LimitError::KeyTooLarge {
                size: key.len(),
                limit: self.max_key_bytes,
            });
        }
        Ok(())
    }

    /// Checks a value against `max_value_bytes`.
    pub fn check_value(&self, value: &[u8]) -> Result<(), LimitError> {
        if value.len() > self.max_value_bytes {
            return Err(LimitError::ValueTooLarge {
                size: value.len(),
                limit: self.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Checks an operation count against `max_batch_ops`.
    pub fn check_batch(&self, count: usize) -> Result<(), LimitError> {
        if count > self.max_batch_ops {
            return Err(LimitError::BatchTooLarge {
                count,
                limit: self.max_batch_ops,
            });
        }
        Ok(())
    }

    /// Resolves a requested scan page size (0 = default) against `max_scan_limit`.
    pub fn scan_page(&self, requested: u32) -> Result<usize, LimitError> {
        let requested = requested as usize;
        match requested {
            0 => Ok(self.max_scan_limit.min(1000)),
            n if n > self.max_scan_limit => Err(LimitError::ScanTooLarge {
                requested: n,
                limit: self.max_scan_limit,
            }),
            n => Ok(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names() {
        for good in ["a", "orders", "tenant-42.eu", "0x_y"] {
            assert!(validate_namespace_name(good).is_ok(), "{good}");
        }
        let too_long = "a".repeat(64);
        for bad in ["", "-a", "A", "a b", "a\0b", "é", ".x", too_long.as_str()] {
            assert!(validate_namespace_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn errors_name_the_limit() {
        let limits = Limits {
            max_key_bytes: 4,
            ..Limits::default()
        };
        let err = limits.check_key(b"12345").unwrap_err();
        assert!(err.to_string().contains("max_key_bytes is 4"), "{err}");
        assert_eq!(limits.check_key(b""), Err(LimitError::EmptyKey));
        let err = limits.scan_page(20_000).unwrap_err();
        assert!(err.to_string().contains("max_scan_limit"), "{err}");
        assert_eq!(limits.scan_page(0), Ok(1000));
    }
}
