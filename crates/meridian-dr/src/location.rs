//! Backup locations: a URL becomes an object store and a path prefix.
//!
//! - `file:///absolute/dir` — a local directory (created if missing); the
//!   embedded default, which the lab uses.
//! - `s3://bucket[/prefix]` — S3 or an S3-compatible server, configured by
//!   the usual `AWS_*` environment variables (`AWS_ENDPOINT`,
//!   `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//!   `AWS_ALLOW_HTTP`); only in builds with the `s3` feature — other builds
//!   refuse it, naming the feature.

use crate::DrError;
use object_store::ObjectStore;
use object_store::path::Path;
use std::sync::Arc;

/// An opened location.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Where inside it this location's objects live.
    pub prefix: Path,
}

/// Checks a location URL without opening it (what `dr location add`
/// accepts): a scheme this build supports and a usable path.
pub fn check(url: &str) -> Result<(), DrError> {
    parse(url).map(|_| ())
}

enum Parsed<'a> {
    File(&'a str),
    S3 { bucket: &'a str, prefix: &'a str },
}

fn parse(url: &str) -> Result<Parsed<'_>, DrError> {
    let refuse = |reason: &str| DrError::Location {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(refuse(
                "a file:// location needs an absolute path (file:///dir)",
            ));
        }
        if path.split('/').any(|part| part == "..") {
            return Err(refuse("a location path may not contain '..'"));
        }
        return Ok(Parsed::File(path));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(refuse(
                "an s3:// location needs a bucket (s3://bucket/prefix)",
            ));
        }
        if !cfg!(feature = "s3") {
            return Err(refuse(
                "s3:// locations need a build with the `s3` feature (cargo build --features meridian/s3)",
            ));
        }
        return Ok(Parsed::S3 { bucket, prefix });
    }
    Err(refuse("supported schemes: file:// and s3://"))
}

/// Opens the location at `url`.
pub fn open(url: &str) -> Result<Opened, DrError> {
    match parse(url)? {
        Parsed::File(path) => {
            std::fs::create_dir_all(path).map_err(|e| DrError::Location {
                url: url.to_string(),
                reason: format!("cannot create {path}: {e}"),
            })?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(path)?;
            Ok(Opened {
                store: Arc::new(store),
                prefix: Path::default(),
            })
        }
        Parsed::S3 { bucket, prefix } => open_s3(url, bucket, prefix),
    }
}

#[cfg(feature = "s3")]
fn open_s3(url: &str, bucket: &str, prefix: &str) -> Result<Opened, DrError> {
    let store = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .build()
        .map_err(|e| DrError::Location {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    Ok(Opened {
        store: Arc::new(store),
        prefix: Path::from(prefix),
    })
}

#[cfg(not(feature = "s3"))]
fn open_s3(url: &str, _bucket: &str, _prefix: &str) -> Result<Opened, DrError> {
    Err(DrError::Location {
        url: url.to_string(),
        reason: "s3:// locations need a build with the `s3` feature".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(check("file:///var/backups").is_ok());
        let cases = [
            ("file://relative", "absolute path"),
            ("file:///a/../b", "'..'"),
            ("ftp://host/x", "supported schemes"),
            ("s3:///prefix", "needs a bucket"),
        ];
        for (url, why) in cases {
            let err = check(url).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
        let s3 = check("s3://bucket/prefix");
        assert_eq!(s3.is_ok(), cfg!(feature = "s3"), "{s3:?}");
    }
}
