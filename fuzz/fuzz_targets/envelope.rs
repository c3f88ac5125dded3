//! Any bytes published on a node's subject, into the envelope decoder and
//! the checks a node makes before writing a hop's frame to a socket.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::protocol::{Envelope, EnvelopeError, Hop};

fuzz_target!(|data: &[u8]| {
    match Envelope::decode(data) {
        Ok(envelope) => {
            for hop in envelope.into_hops() {
                if let Hop::Message(message) = hop {
                    // A frame that passes is one a client's parser reads.
                    if message.frame_matches() {
                        let frame: serde_json::Value =
                            serde_json::from_str(message.frame.get()).expect("readable frame");
                        assert_eq!(frame["type"], "message");
                        assert_eq!(frame["to"], message.to.as_str());
                    }
                }
            }
        }
        Err(EnvelopeError::Malformed(why)) => assert!(!why.is_empty()),
        Err(EnvelopeError::UnknownVersion(v)) => assert_ne!(v, 1),
    }
});
