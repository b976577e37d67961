//! Fuzzes the wire decoder: `decode` must be total (a batch or a typed
//! error, never a panic, an abort or a stack overflow), and whatever it
//! accepts must survive an encode/decode round trip. `decode_on_subject`
//! gets the same bytes on a subject made from the first bytes of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = invalog::wire::decode(data);
    if let Ok(batch) = &decoded {
        let again = invalog::wire::decode(&invalog::wire::encode(batch))
            .expect("an accepted batch re-encodes to something decodable");
        assert_eq!(&again, batch, "encode/decode round trip");
    }
    // A subject from a prefix of the input (up to the first newline), the
    // body from the rest.
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(0);
    let subject = String::from_utf8_lossy(&data[..split]);
    let on_subject = invalog::wire::decode_on_subject(&subject, &data[split..]);
    if let Ok(batch) = on_subject {
        let token = subject.rsplit('.').next().unwrap_or(&subject);
        assert_eq!(token, batch.refresher.name.as_str());
    }
});
