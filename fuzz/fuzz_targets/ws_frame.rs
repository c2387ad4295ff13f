//! The v0.1.0 WebSocket frame decoder: any text must decode to a message or an error,
//! never panic, and every decoded message must convert to a session frame or none.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlua_swarm_grpc::ws::protocol::{client_frame, decode};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(msg) = decode(&text) {
        let _ = client_frame(msg);
    }
});
