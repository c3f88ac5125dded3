//! Any text a client can put in a WebSocket text frame, into the
//! client-frame decoder: it must not panic, and what it accepts must obey
//! the protocol's rules.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::protocol::frames::{MAX_FRAME_ID_BYTES, check_body};
use switchboard::protocol::{ClientFrame, ClientId, parse_client_frame};

fuzz_target!(|data: &[u8]| {
    // tungstenite hands the session UTF-8 only.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_client_frame(text) {
        Ok(ClientFrame::Send(send)) => {
            assert!(ClientId::parse(send.to.as_str()).is_ok());
            // What is accepted must be readable by the recipient's parser.
            assert!(serde_json::from_str::<serde_json::Value>(send.body.get()).is_ok());
            assert!(check_body(send.body).is_ok());
            assert!(send.id.is_none_or(|id| id.len() <= MAX_FRAME_ID_BYTES));
        }
        Ok(ClientFrame::Ping { id }) => assert!(id.is_none_or(|id| id.len() <= MAX_FRAME_ID_BYTES)),
        Err(e) => assert!(!e.message.is_empty()),
    }
});
