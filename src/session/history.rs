//! A session's `history`, `conversations` and `read` frames (v3), each
//! answered with one frame: the page, the list, `ok`, or an error
//! (`no_history` on a node without history, `not_allowed` for a group the
//! client is not in, `unavailable` while the store is away).

use std::sync::Arc;

use super::Env;
use crate::hub::SessionHandle;
use crate::protocol::frames::encode_error;
use crate::protocol::history::{PageRange, Thread, encode_conversations, encode_history};
use crate::protocol::watch::encode_ok;
use crate::protocol::{ClientId, ErrorCode, FrameError};
use crate::routing::{History, Refused};

/// The history service, or the error frame of a node without one.
fn service<'e>(env: &'e Env, id: Option<&str>) -> Result<&'e Arc<History>, String> {
    env.history.as_ref().ok_or_else(|| {
        env.metrics.error(ErrorCode::NoHistory);
        encode_error(&FrameError::new(
            ErrorCode::NoHistory,
            "this node keeps no history (it runs without --history)",
            id,
        ))
    })
}

fn refused(env: &Env, e: Refused, id: Option<&str>) -> String {
    let code = match e {
        Refused::NotAllowed(_) => ErrorCode::NotAllowed,
        Refused::Store(_) | Refused::Presence(_) => ErrorCode::Unavailable,
    };
    env.metrics.error(code);
    encode_error(&FrameError::new(code, crate::cause::chain(&e), id))
}

pub(super) async fn page(
    env: &Env,
    client: &ClientId,
    id: Option<String>,
    thread: Thread,
    range: PageRange,
    limit: usize,
) -> String {
    let id = id.as_deref();
    let history = match service(env, id) {
        Ok(history) => history,
        Err(frame) => return frame,
    };
    match history.page(client, &thread, range, limit).await {
        Ok((messages, more)) => encode_history(id, &thread, &messages, more),
        Err(e) => refused(env, e, id),
    }
}

pub(super) async fn conversations(
    env: &Env,
    client: &ClientId,
    id: Option<String>,
    before: Option<u64>,
    limit: usize,
) -> String {
    let id = id.as_deref();
    let history = match service(env, id) {
        Ok(history) => history,
        Err(frame) => return frame,
    };
    match history.conversations(client, before, limit).await {
        Ok((items, more)) => encode_conversations(id, &items, more),
        Err(e) => refused(env, e, id),
    }
}

pub(super) async fn read(
    env: &Env,
    handle: &Arc<SessionHandle>,
    id: Option<String>,
    thread: Thread,
    upto: u64,
) -> String {
    let id = id.as_deref();
    let history = match service(env, id) {
        Ok(history) => history,
        Err(frame) => return frame,
    };
    match history
        .mark_read(&handle.client, Some(handle.id), &thread, upto)
        .await
    {
        Ok(_) => encode_ok(id),
        Err(e) => refused(env, e, id),
    }
}
