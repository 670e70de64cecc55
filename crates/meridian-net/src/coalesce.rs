//! Request bodies that are ready when the call is made go out in one piece.
//!
//! A tonic client hands hyper a body that yields the encoded message and only
//! on the *next* poll says it has ended. hyper therefore sends the message in
//! one DATA frame and, later and usually in a second write, an empty DATA frame
//! carrying END_STREAM. For a unary call that is two socket writes instead of
//! one at the sender, and two reads and two wake-ups at the receiver, per call;
//! on a loopback-heavy deployment (a gateway in front of a shard) that second
//! round costs about as much CPU as the call itself.
//!
//! [`Coalesce`] takes whatever the body has ready at call time without
//! waiting. When that is the whole body (every unary call) the request is sent
//! with a body that is complete from the start, which hyper puts in one DATA
//! frame marked END_STREAM. A streaming body keeps streaming: what was ready
//! goes first, the rest follows as it comes.

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tonic::body::Body;

/// Bytes taken ahead of the call at most; a larger body streams from there.
const MAX_TAKEN: usize = 1 << 20;

/// A gRPC client service whose ready request bodies are sent whole.
#[derive(Debug, Clone)]
pub struct Coalesce<S> {
    inner: S,
    /// Sent as `authorization` on every request that has none (an API token).
    authorization: Option<http::HeaderValue>,
}

impl<S> Coalesce<S> {
    /// Wraps `inner` (typically a `tonic::transport::Channel`).
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            authorization: None,
        }
    }

    /// Sends `value` as the `authorization` header of every request (the
    /// dialer's API token, see [`crate::Dialer::with_bearer_token`]).
    pub fn with_authorization(mut self, value: Option<http::HeaderValue>) -> Self {
        self.authorization = value;
        self
    }
}

impl<S> tower_service::Service<http::Request<Body>> for Coalesce<S>
where
    S: tower_service::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        if let Some(value) = &self.authorization {
            parts
                .headers
                .entry(http::header::AUTHORIZATION)
                .or_insert_with(|| value.clone());
        }
        self.inner
            .call(http::Request::from_parts(parts, take_ready(body)))
    }
}

/// `body` with everything it has ready now taken out in front.
fn take_ready(mut body: Body) -> Body {
    if body.is_end_stream() {
        return body;
    }
    // Polling without a real waker is fine: a body that is not ready keeps no
    // promise to this waker, and the transport polls it again with its own.
    let mut cx = Context::from_waker(Waker::noop());
    let mut taken = Taken::default();
    loop {
        let next = match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(None) => return Body::new(Ready::new(taken, None, Body::empty())),
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    taken.push(data);
                    if taken.len() < MAX_TAKEN {
                        continue;
                    }
                    None
                }
                // Trailers end a body; nothing follows them.
                Err(trailers) => Some(Ok(trailers)),
            },
            Poll::Ready(Some(Err(status))) => Some(Err(status)),
            Poll::Pending => None,
        };
        return Body::new(Ready::new(taken, next, body));
    }
}

/// The data taken so far: the common single chunk is kept as it is, without
/// a copy; only a second chunk makes a joined buffer.
#[derive(Default)]
enum Taken {
    #[default]
    Nothing,
    One(Bytes),
    Joined(BytesMut),
}

impl Taken {
    fn push(&mut self, data: Bytes) {
        *self = match std::mem::take(self) {
            Taken::Nothing => Taken::One(data),
            Taken::One(first) => {
                let mut joined = BytesMut::from(first);
                joined.extend_from_slice(&data);
                Taken::Joined(joined)
            }
            Taken::Joined(mut joined) => {
                joined.extend_from_slice(&data);
                Taken::Joined(joined)
            }
        };
    }

    fn len(&self) -> usize {
        match self {
            Taken::Nothing => 0,
            Taken::One(data) => data.len(),
            Taken::Joined(data) => data.len(),
        }
    }

    fn into_bytes(self) -> Option<Bytes> {
        match self {
            Taken::Nothing => None,
            Taken::One(data) => Some(data),
            Taken::Joined(data) => Some(data.freeze()),
        }
    }
}

/// What was ready, then the frame that stopped the taking (trailers or an
/// error), then the rest of the original body. With nothing left behind, the
/// body is complete from the start: hyper sends its data with END_STREAM.
struct Ready {
    taken: Option<Bytes>,
    next: Option<Result<Frame<Bytes>, tonic::Status>>,
    rest: Body,
}

impl Ready {
    fn new(taken: Taken, next: Option<Result<Frame<Bytes>, tonic::Status>>, rest: Body) -> Self {
        Self {
            taken: taken.into_bytes().filter(|data| !data.is_empty()),
            next,
            rest,
        }
    }
}

impl HttpBody for Ready {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if let Some(data) = self.taken.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(next) = self.next.take() {
            return Poll::Ready(Some(next));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.taken.is_none() && self.next.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let taken = self.taken.as_ref().map_or(0, |data| data.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + taken);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + taken);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_ready_body_becomes_complete_from_the_start() {
        let original = Body::new(http_body_util::StreamBody::new(tokio_stream_like(vec![
            Bytes::from_static(b"abc"),
            Bytes::from_static(b"def"),
        ])));
        let body = take_ready(original);
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(6));
        let mut body = body;
        let frame = body.frame().await.expect("a frame").expect("no error");
        assert_eq!(
            frame.into_data().expect("data"),
            Bytes::from_static(b"abcdef")
        );
        // Complete right after its only frame: hyper marks that frame END_STREAM.
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn a_body_that_is_not_ready_keeps_streaming_after_what_was() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, tonic::Status>>(4);
        tx.send(Ok(Frame::data(Bytes::from_static(b"first"))))
            .await
            .expect("receiver alive");
        let original = Body::new(http_body_util::StreamBody::new(ReceiverStream(rx)));
        let mut body = take_ready(original);
        let first = body.frame().await.expect("a frame").expect("no error");
        assert_eq!(
            first.into_data().expect("data"),
            Bytes::from_static(b"first")
        );
        tx.send(Ok(Frame::data(Bytes::from_static(b"later"))))
            .await
            .expect("receiver alive");
        drop(tx);
        let later = body.frame().await.expect("a frame").expect("no error");
        assert_eq!(
            later.into_data().expect("data"),
            Bytes::from_static(b"later")
        );
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn an_error_in_the_body_is_still_reported() {
        let original = Body::new(http_body_util::StreamBody::new(futures_like_iter(vec![
            Ok(Frame::data(Bytes::from_static(b"ok"))),
            Err(tonic::Status::internal("encoding failed")),
        ])));
        let mut body = take_ready(original);
        let first = body.frame().await.expect("a frame").expect("no error");
        assert_eq!(first.into_data().expect("data"), Bytes::from_static(b"ok"));
        let error = body.frame().await.expect("a frame").expect_err("the error");
        assert_eq!(error.message(), "encoding failed");
    }

    /// A stream of ready data frames.
    fn tokio_stream_like(
        chunks: Vec<Bytes>,
    ) -> impl futures::Stream<Item = Result<Frame<Bytes>, tonic::Status>> + Send + 'static {
        futures_like_iter(chunks.into_iter().map(|c| Ok(Frame::data(c))).collect())
    }

    fn futures_like_iter(
        items: Vec<Result<Frame<Bytes>, tonic::Status>>,
    ) -> impl futures::Stream<Item = Result<Frame<Bytes>, tonic::Status>> + Send + 'static {
        Iter(items.into_iter())
    }

    struct Iter(std::vec::IntoIter<Result<Frame<Bytes>, tonic::Status>>);

    impl futures::Stream for Iter {
        type Item = Result<Frame<Bytes>, tonic::Status>;
        fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.0.next())
        }
    }

    struct ReceiverStream(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, tonic::Status>>);

    impl futures::Stream for ReceiverStream {
        type Item = Result<Frame<Bytes>, tonic::Status>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx)
        }
    }
}
