//! Who called, read from the transport: the identity in the client
//! certificate the TLS handshake verified, or an API token in
//! `Authorization: Bearer`. A token, when present, is what the call is
//! decided on (a tool may hold a token and a low-privileged certificate).
//!
//! A server that hands a call to its own gRPC handlers (the HTTP admin API
//! calling the gRPC service) passes the caller it established as a request
//! extension; a remote caller cannot set extensions.

use crate::decision::{Caller, Refusal};
use crate::token;

/// The caller of a gRPC call: a [`Caller`] extension set by this process, else
/// a bearer token, else the TLS client certificate.
pub fn of_grpc<T>(request: &tonic::Request<T>) -> Caller {
    if let Some(caller) = request.extensions().get::<Caller>() {
        return caller.clone();
    }
    if let Some(value) = request.metadata().get("authorization") {
        return from_authorization(value.to_str().ok());
    }
    match request.extensions().get::<meridian_net::accept::Peer>() {
        Some(peer) => of_peer(peer),
        // Not from a connection (an in-process call without a caller).
        None => Caller::Plain,
    }
}

fn of_peer(peer: &meridian_net::accept::Peer) -> Caller {
    use meridian_net::accept::ClientCertificate;
    match peer.tls.as_deref() {
        None => Caller::Plain,
        Some(ClientCertificate::Absent) => Caller::Unidentified(
            "no client certificate and no API token (send `authorization: Bearer mrdt_...`)".into(),
        ),
        Some(ClientCertificate::Identified(identity)) => Caller::Certificate(identity.clone()),
        Some(ClientCertificate::Unusable(why)) => Caller::Unidentified(why.clone()),
    }
}

/// The caller of an HTTP call on a connection from `peer`.
pub fn of_http(peer: &meridian_net::accept::Peer, headers: &http::HeaderMap) -> Caller {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        return from_authorization(value.to_str().ok());
    }
    of_peer(peer)
}

fn from_authorization(value: Option<&str>) -> Caller {
    let Some(bearer) = value.and_then(|v| v.strip_prefix("Bearer ")) else {
        return Caller::Unidentified(
            "the authorization header must be `Bearer mrdt_...` (an API token)".into(),
        );
    };
    match token::parse(bearer.trim()) {
        Ok(presented) => Caller::Token(presented),
        Err(err) => Caller::Unidentified(err.to_string()),
    }
}

/// A refusal as a gRPC status: UNAUTHENTICATED, PERMISSION_DENIED or
/// UNAVAILABLE (policy not received yet; retryable).
pub fn status(refusal: &Refusal) -> tonic::Status {
    match refusal {
        Refusal::Unauthenticated(_) => tonic::Status::unauthenticated(refusal.to_string()),
        Refusal::Denied { .. } => tonic::Status::permission_denied(refusal.to_string()),
        Refusal::NoPolicy { .. } => tonic::Status::unavailable(refusal.to_string()),
    }
}

/// A refusal as an HTTP status code: 401, 403 or 503.
pub fn http_status(refusal: &Refusal) -> http::StatusCode {
    match refusal {
        Refusal::Unauthenticated(_) => http::StatusCode::UNAUTHORIZED,
        Refusal::Denied { .. } => http::StatusCode::FORBIDDEN,
        Refusal::NoPolicy { .. } => http::StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_token_and_extension_callers() {
        let request = tonic::Request::new(());
        assert_eq!(of_grpc(&request), Caller::Plain);

        let minted = token::mint();
        let mut request = tonic::Request::new(());
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", minted.token).parse().unwrap(),
        );
        assert!(matches!(of_grpc(&request), Caller::Token(t) if t.id == minted.id));

        let mut request = tonic::Request::new(());
        request
            .metadata_mut()
            .insert("authorization", "Basic abc".parse().unwrap());
        assert!(matches!(of_grpc(&request), Caller::Unidentified(_)));

        // An extension set in-process wins over anything the caller sent.
        let mut request = tonic::Request::new(());
        request
            .metadata_mut()
            .insert("authorization", "Basic abc".parse().unwrap());
        let admin = Caller::Certificate(meridian_net::Identity::parse("user/admin").unwrap());
        request.extensions_mut().insert(admin.clone());
        assert_eq!(of_grpc(&request), admin);
    }
}
