//! A session's send, put to the application's backend (v3, the `send`
//! hook) before it is routed: allowed as it is, rewritten, or refused with
//! `rejected` (or `unavailable`, when the hook failed and the gate is
//! closed). Nothing refused is routed or stored.

use serde_json::value::RawValue;

use crate::hooks::{SendCall, SendTo};
use crate::protocol::frames::{encode_error, message_body_and_ts};
use crate::protocol::{DeviceId, ErrorCode, FrameError, Recipient};
use crate::routing::{Checked, Gate, Message};

/// Asks the backend about `msg` (sent from `device`): `Ok` to go on (its
/// body perhaps rewritten), or the error frame that answers the send.
pub(super) async fn ask(gate: &Gate, msg: &mut Message, device: &DeviceId) -> Result<(), String> {
    let id = msg.sender.as_ref().and_then(|s| s.id.clone());
    let body = message_body_and_ts(&msg.frame)
        .and_then(|(body, _)| serde_json::from_str::<&RawValue>(body).ok());
    let Some(body) = body else {
        return Err(refuse(
            ErrorCode::Internal,
            "the message could not be read back",
            id,
        ));
    };
    let to = match &msg.to {
        Recipient::Client(to) => SendTo::To(to),
        Recipient::Group(group) => SendTo::Group(group),
    };
    let call = SendCall {
        hook: "send",
        msg_id: msg.msg_id,
        from: &msg.from,
        device,
        to,
        body,
    };
    match gate.check(&call).await {
        Checked::Allow => Ok(()),
        Checked::Rewritten(body) => {
            msg.rebody(&body);
            Ok(())
        }
        Checked::Rejected { reason, message } => {
            let error = FrameError::rejected(&reason, message, id.as_deref());
            Err(encode_error(&error))
        }
        Checked::Unavailable(why) => Err(refuse(ErrorCode::Unavailable, &why, id)),
    }
}

fn refuse(code: ErrorCode, why: &str, id: Option<std::sync::Arc<str>>) -> String {
    encode_error(&FrameError::new(code, why, id.as_deref()))
}
