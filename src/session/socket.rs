//! Writing to a session's socket, always within the write timeout.

use std::time::Duration;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};

use super::Socket;
use crate::config::Limits;
use crate::hub::{Batch, SessionHandle};
use crate::protocol::frames::going_away_reason;
use crate::protocol::{Disconnect, Fate, OfflineReason};
use crate::routing::Router;

/// A write that did not complete: the session ends as a slow consumer.
#[derive(Debug, thiserror::Error)]
pub(super) enum WriteError {
    #[error("the socket write took longer than the write timeout")]
    Timeout,
    #[error("the socket write failed")]
    Socket(#[source] WsError),
}

/// Writes frames and flushes once, within `timeout`.
pub(super) async fn write<F: Into<Utf8Bytes>>(
    ws: &mut Socket,
    frames: impl IntoIterator<Item = F>,
    timeout: Duration,
) -> Result<(), WriteError> {
    let send = async {
        for frame in frames {
            ws.feed(WsMessage::Text(frame.into())).await?;
        }
        ws.flush().await
    };
    match tokio::time::timeout(timeout, send).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(WriteError::Socket(e)),
        Err(_) => Err(WriteError::Timeout),
    }
}

/// Writes answers, owed outcomes and queued messages with one flush, then
/// settles each message: `delivered` once the socket took it, `offline` if
/// it did not.
pub(super) async fn write_outbound(
    ws: &mut Socket,
    router: &Router,
    session: &SessionHandle,
    answers: Vec<Utf8Bytes>,
    batch: Batch,
    timeout: Duration,
) -> Result<(), WriteError> {
    if answers.is_empty()
        && batch.messages.is_empty()
        && batch.outcomes.is_empty()
        && batch.notes.is_empty()
    {
        return Ok(());
    }
    let mut handovers = Vec::new();
    let mut frames = answers;
    frames.extend(batch.outcomes);
    frames.extend(batch.notes);
    frames.extend(batch.messages.into_iter().map(|item| {
        handovers.extend(item.handover);
        item.frame
    }));
    let written = write(ws, frames, timeout).await;
    let fate = match &written {
        Ok(()) => Fate::Delivered,
        Err(WriteError::Timeout) => Fate::Offline(OfflineReason::SlowConsumer),
        Err(WriteError::Socket(_)) => Fate::Offline(OfflineReason::Disconnected),
    };
    // Every outcome is settled; the handover decides who needs to hear it
    // (a sender's node always, a sender here only if it asked).
    for handover in handovers {
        router
            .settle(&handover, &session.client, &session.device, fate)
            .await;
    }
    written
}

/// Sends the close frame for `why`, within the write timeout.
pub(super) async fn close_socket(
    ws: &mut Socket,
    why: Disconnect,
    limits: &Limits,
) -> Result<(), WriteError> {
    // A draining node spreads its clients' return (v3): each 1001 asks for
    // a wait picked at random below --drain-spread-ms.
    let reason = match why {
        Disconnect::GoingAway if !limits.drain_spread.is_zero() => Utf8Bytes::from(
            going_away_reason(limits.drain_spread.mul_f64(crate::protocol::jitter())),
        ),
        _ => Utf8Bytes::from_static(why.reason()),
    };
    let frame = CloseFrame {
        code: CloseCode::from(why.code()),
        reason,
    };
    let timeout = limits.write_timeout;
    match tokio::time::timeout(timeout, ws.close(Some(frame))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(WriteError::Socket(e)),
        Err(_) => Err(WriteError::Timeout),
    }
}
