//! Property tests of the two decoders that read untrusted bytes: client
//! frames (from anyone who can open a session) and envelopes (from
//! anything that can publish on a node's subject). Whatever goes in, they
//! must not panic, and what comes out is either a valid frame that obeys
//! the protocol's rules or a protocol error.
//!
//! `cargo fuzz` (fuzz/, scripts/fuzz.sh) explores the same decoders for
//! much longer; these keep them honest in every test run.

use proptest::prelude::*;
use serde_json::Value;
use serde_json::value::RawValue;
use switchboard::protocol::envelope::{
    MessageHopOut, encode_envelope, encode_hop, encode_message_hop,
};
use switchboard::protocol::frames::{
    MAX_BODY_DEPTH, MAX_FRAME_ID_BYTES, check_body, encode_message,
};
use switchboard::protocol::{
    Addressee, ClientFrame, ClientId, DeviceId, Envelope, EnvelopeError, ErrorCode, Fate, Hop,
    NodeId, OfflineReason, Outcome, Recipient, ReplyTo, Target, parse_client_frame,
};
use uuid::Uuid;

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Strings that are valid client ids.
fn client_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.@:-]{1,128}"
}

/// Objects shaped like client frames: the known fields, each present or
/// not, each of the right type or any other JSON, plus strangers.
fn frame_like() -> impl Strategy<Value = Value> {
    let field = |right: BoxedStrategy<Value>| {
        prop_oneof![
            Just(None),
            right.prop_map(Some),
            json_value().prop_map(Some)
        ]
    };
    let kind = prop_oneof![Just("send"), Just("ping"), Just("sned"), Just("")]
        .prop_map(|k| Value::String(k.into()))
        .boxed();
    let to = prop_oneof![client_id(), ".{0,140}"]
        .prop_map(Value::String)
        .boxed();
    let id = ".{0,140}".prop_map(Value::String).boxed();
    let receipt = any::<bool>().prop_map(Value::Bool).boxed();
    (
        field(kind),
        field(to),
        field(json_value().boxed()),
        field(id),
        field(receipt),
        prop::collection::btree_map("[a-z]{1,6}", json_value(), 0..3),
    )
        .prop_map(|(kind, to, body, id, receipt, extra)| {
            let mut frame: serde_json::Map<String, Value> = extra.into_iter().collect();
            for (name, value) in [
                ("type", kind),
                ("to", to),
                ("body", body),
                ("id", id),
                ("receipt", receipt),
            ] {
                if let Some(value) = value {
                    frame.insert(name.into(), value);
                }
            }
            Value::Object(frame)
        })
}

/// The decoder's contract for one input.
fn check_client_frame(text: &str) {
    match parse_client_frame(text) {
        Ok(ClientFrame::Send(send)) => {
            let to = match &send.to {
                Recipient::Client(client) => client.as_str(),
                Recipient::Group(group) => group.as_str(),
            };
            assert!(ClientId::parse(to).is_ok());
            // Whatever is accepted, the recipient's parser can read.
            let body: Value = serde_json::from_str(send.body.get()).expect("body is JSON");
            let _ = body;
            assert!(check_body(send.body).is_ok());
            assert!(
                send.id
                    .as_ref()
                    .is_none_or(|id| id.len() <= MAX_FRAME_ID_BYTES)
            );
        }
        Ok(ClientFrame::Ping { id }) => {
            assert!(id.as_ref().is_none_or(|id| id.len() <= MAX_FRAME_ID_BYTES));
        }
        Ok(ClientFrame::Received { .. } | ClientFrame::Visibility { .. }) => {}
        Ok(ClientFrame::Watch { clients, .. } | ClientFrame::Unwatch { clients, .. }) => {
            assert!(clients.len() <= switchboard::protocol::watch::MAX_WATCH_IDS);
        }
        Ok(ClientFrame::Signal(signal)) => {
            assert!(signal.body.get().len() <= switchboard::protocol::watch::MAX_SIGNAL_BODY_BYTES);
            assert!(check_body(signal.body).is_ok());
        }
        Ok(ClientFrame::History(h)) => {
            assert!((1..=switchboard::protocol::history::MAX_PAGE).contains(&h.limit));
        }
        Ok(ClientFrame::Conversations(c)) => {
            assert!((1..=switchboard::protocol::history::MAX_PAGE).contains(&c.limit));
        }
        Ok(ClientFrame::Read(_)) => {}
        Err(e) => {
            assert!(matches!(
                e.code,
                ErrorCode::BadFrame
                    | ErrorCode::UnknownType
                    | ErrorCode::InvalidRecipient
                    | ErrorCode::TooLarge
            ));
            assert!(!e.message.is_empty());
            assert!(
                e.id.as_ref()
                    .is_none_or(|id| id.len() <= MAX_FRAME_ID_BYTES)
            );
        }
    }
}

fn check_envelope(bytes: &[u8]) {
    match Envelope::decode(bytes) {
        Ok(envelope) => {
            for hop in envelope.into_hops() {
                if let Hop::Message(m) = hop {
                    // A frame that passes is one a client's parser reads.
                    if m.frame_matches() {
                        let frame: Value = serde_json::from_str(m.frame.get()).expect("readable");
                        assert_eq!(frame["type"], "message");
                        match (&m.to, &m.group) {
                            (Some(to), None) => assert_eq!(frame["to"], to.as_str()),
                            (None, Some(group)) => assert_eq!(frame["group"], group.as_str()),
                            _ => panic!("a matching frame names one addressee"),
                        }
                    }
                }
            }
        }
        Err(EnvelopeError::Malformed(why)) => assert!(!why.is_empty()),
        Err(EnvelopeError::UnknownVersion(v)) => assert_ne!(v, 2),
    }
}

/// Inputs `cargo fuzz` found that the decoder once got wrong. Each stays
/// here so it cannot come back.
#[test]
fn fuzz_findings_stay_fixed() {
    // client_frame, 3.06 M executions in: a number beyond f64's range is
    // valid JSON syntax, so the body passed, and every recipient whose
    // parser refuses such numbers (serde_json does) could not read the
    // frame. Now refused at the sender's node.
    let found = r#"{"type":"send","to":"a@b:c","body":[1,[666666666666666666666666666666,666666666666666666,666666666666,666666,666666066666666,666666,66666600000000066666666666,666666,666666066666666,666666,66666600000000000338000000000E338,629513536842407,{"666":{"text":"hi"},"66664665x":null}]]}"#;
    for text in [
        found,
        r#"{"type":"send","to":"bob","body":1e400}"#,
        r#"{"type":"send","to":"bob","body":{"n":-1e400}}"#,
    ] {
        let e = parse_client_frame(text).expect_err("refused");
        assert_eq!(e.code, ErrorCode::BadFrame);
        assert!(e.message.contains("out of range"), "{}", e.message);
        check_client_frame(text);
    }
    // Big but finite numbers and long integers are fine.
    for body in [
        "1.7976931348623157e308",
        "123456789012345678901234567890",
        "-0.0",
    ] {
        let text = format!(r#"{{"type":"send","to":"bob","body":{body}}}"#);
        assert!(parse_client_frame(&text).is_ok(), "{body}");
    }
}

proptest! {
    #[test]
    fn client_frames_from_any_text(text in ".{0,300}") {
        check_client_frame(&text);
    }

    #[test]
    fn client_frames_from_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        // Text frames are UTF-8 by the time they reach the decoder.
        check_client_frame(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn client_frames_from_any_json(value in json_value()) {
        check_client_frame(&value.to_string());
    }

    #[test]
    fn client_frames_from_frame_like_objects(value in frame_like()) {
        check_client_frame(&value.to_string());
    }

    #[test]
    fn valid_sends_decode_to_what_was_sent(
        to in client_id(),
        body in json_value(),
        id in prop::option::of("[ -~]{0,128}"),
        receipt in any::<bool>(),
    ) {
        let mut frame = serde_json::json!({"type": "send", "to": to, "body": body, "receipt": receipt});
        if let Some(id) = &id {
            frame["id"] = Value::String(id.clone());
        }
        let text = frame.to_string();
        let Ok(ClientFrame::Send(send)) = parse_client_frame(&text) else {
            panic!("valid send refused: {text}");
        };
        prop_assert_eq!(send.to, Recipient::Client(ClientId::parse(&to).unwrap()));
        // The body travels as the client wrote it, byte for byte.
        prop_assert_eq!(send.body.get(), body.to_string());
        prop_assert_eq!(send.id.as_deref(), id.as_deref());
        prop_assert_eq!(send.receipt, receipt);
    }

    #[test]
    fn deep_bodies_are_refused_not_a_crash(depth in 1usize..5000) {
        let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let text = format!(r#"{{"type":"send","to":"bob","body":{body}}}"#);
        let result = parse_client_frame(&text);
        prop_assert_eq!(result.is_ok(), depth <= MAX_BODY_DEPTH, "depth {}", depth);
    }

    #[test]
    fn envelopes_from_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check_envelope(&bytes);
    }

    #[test]
    fn envelopes_from_any_json(value in json_value()) {
        check_envelope(value.to_string().as_bytes());
        check_envelope(serde_json::json!({"v": 2, "hop": value}).to_string().as_bytes());
        check_envelope(serde_json::json!({"v": 2, "hops": [value]}).to_string().as_bytes());
    }

    #[test]
    fn valid_envelopes_decode_to_what_was_sent(
        from in client_id(),
        to in client_id(),
        body in json_value(),
        reply in any::<bool>(),
        forwarded in any::<bool>(),
        delivered in any::<bool>(),
    ) {
        let (from, to) = (ClientId::parse(&from).unwrap(), ClientId::parse(&to).unwrap());
        let msg_id = Uuid::now_v7();
        let raw_body = RawValue::from_string(body.to_string()).unwrap();
        let frame = encode_message(msg_id, &from, Addressee::Client(&to), &raw_body, 7);
        let reply_to = ReplyTo { node: NodeId::parse("node-a").unwrap(), session: Uuid::new_v4(), receipt: false };
        let targets = [Target { to: to.clone(), device: DeviceId::default_device(), session: Uuid::new_v4() }];
        let message = encode_message_hop(&MessageHopOut {
            msg_id,
            from: &from,
            to: Addressee::Client(&to),
            forwarded,
            reply: reply.then_some(&reply_to),
            targets: &targets,
            carbons: &[],
            part: 0,
            frame: &frame,
        });
        let fate = if delivered { Fate::Delivered } else { Fate::Offline(OfflineReason::Disconnected) };
        let outcome = Outcome::target(msg_id, to.clone(), DeviceId::default_device(), fate);
        let outcomes = encode_hop(&Hop::Outcomes(vec![outcome.clone()]));
        let bytes = encode_envelope([message.as_slice(), outcomes.as_slice()]);
        let mut hops = Envelope::decode(&bytes).unwrap().into_hops();
        let Some(Hop::Message(m)) = hops.next() else { panic!("message first") };
        prop_assert!(m.frame_matches());
        prop_assert_eq!(m.frame.get(), frame.as_str());
        prop_assert_eq!((&m.from, m.to.as_ref(), m.forwarded), (&from, Some(&to), forwarded));
        prop_assert_eq!(&m.targets[..], &targets[..]);
        prop_assert_eq!(m.reply.map(|r| r.session), reply.then_some(reply_to.session));
        let Some(Hop::Outcomes(back)) = hops.next() else { panic!("outcomes second") };
        prop_assert_eq!(back, vec![outcome]);
    }
}
