//! The emulator's control API (HTTP, JSON), used by `meridian lab partition|heal`
//! and `lab status`:
//!
//! - `GET /links` — every link's [`LinkStatus`](crate::LinkStatus);
//! - `POST /links/{name}/partition` and `POST /links/{name}/heal`;
//! - `POST /partition?a=REGION&b=REGION` and `POST /heal?a=..&b=..` — every link
//!   between two regions, both directions (links are named `FROM->TO:...`).

use crate::Link;
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use std::sync::Arc;

/// The links a control API manages.
pub type Links = Arc<Vec<Link>>;

/// Whether link `name` joins regions `a` and `b` (either direction).
pub fn joins(name: &str, a: &str, b: &str) -> bool {
    let Some((from, rest)) = name.split_once("->") else {
        return false;
    };
    let to = rest.split(':').next().unwrap_or_default();
    (from == a && to == b) || (from == b && to == a)
}

/// A router serving the control API over `links`.
pub fn router(links: Links) -> Router {
    Router::new()
        .route("/links", get(list))
        .route("/links/{name}/partition", post(partition_one))
        .route("/links/{name}/heal", post(heal_one))
        .route("/partition", post(partition_pair))
        .route("/heal", post(heal_pair))
        .with_state(links)
}

async fn list(State(links): State<Links>) -> Json<Vec<crate::LinkStatus>> {
    Json(links.iter().map(Link::status).collect())
}

fn set_one(links: &Links, name: &str, partitioned: bool) -> (StatusCode, String) {
    match links.iter().find(|l| l.name() == name) {
        Some(link) => {
            link.set_partitioned(partitioned);
            (
                StatusCode::OK,
                format!("{name}: partitioned={partitioned}\n"),
            )
        }
        None => (StatusCode::NOT_FOUND, format!("no link named {name:?}\n")),
    }
}

async fn partition_one(
    State(links): State<Links>,
    Path(name): Path<String>,
) -> (StatusCode, String) {
    set_one(&links, &name, true)
}

async fn heal_one(State(links): State<Links>, Path(name): Path<String>) -> (StatusCode, String) {
    set_one(&links, &name, false)
}

/// Two regions.
#[derive(Debug, Deserialize)]
struct Pair {
    a: String,
    b: String,
}

fn set_pair(links: &Links, pair: &Pair, partitioned: bool) -> (StatusCode, String) {
    let mut changed = 0;
    for link in links.iter().filter(|l| joins(l.name(), &pair.a, &pair.b)) {
        link.set_partitioned(partitioned);
        changed += 1;
    }
    if changed == 0 {
        return (
            StatusCode::NOT_FOUND,
            format!("no link between {} and {}\n", pair.a, pair.b),
        );
    }
    (
        StatusCode::OK,
        format!("{changed} links partitioned={partitioned}\n"),
    )
}

async fn partition_pair(
    State(links): State<Links>,
    Query(pair): Query<Pair>,
) -> (StatusCode, String) {
    set_pair(&links, &pair, true)
}

async fn heal_pair(State(links): State<Links>, Query(pair): Query<Pair>) -> (StatusCode, String) {
    set_pair(&links, &pair, false)
}

#[cfg(test)]
mod tests {
    use super::joins;

    #[test]
    fn link_names_join_regions_in_both_directions() {
        assert!(joins("us-east->eu-west:node-1", "us-east", "eu-west"));
        assert!(joins("us-east->eu-west:node-1", "eu-west", "us-east"));
        assert!(!joins("us-east->ap-south:node-1", "us-east", "eu-west"));
        assert!(!joins("garbage", "us-east", "eu-west"));
    }
}
