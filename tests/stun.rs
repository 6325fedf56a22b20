//! The server's UDP port answers STUN Binding requests (RFC 8489), checked with an independent
//! STUN implementation (the `stun_codec` crate) as a standard client would use it.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use bytecodec::{DecodeExt, EncodeExt};
use fala_server::{Config, EchoConfig};
use stun_codec::rfc5389::attributes::{Fingerprint, Software, XorMappedAddress};
use stun_codec::rfc5389::{methods::BINDING, Attribute};
use stun_codec::{Message, MessageClass, MessageDecoder, MessageEncoder, TransactionId};
use support::TestServer;

/// Sends `request` from `client` to `server` and decodes the answer, retransmitting as STUN
/// clients do (the server binds its UDP port a moment after it starts).
fn ask(client: &UdpSocket, server: SocketAddr, request: Message<Attribute>) -> Message<Attribute> {
    let bytes = MessageEncoder::new()
        .encode_into_bytes(request)
        .expect("encode");
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1500];
    let mut answer = None;
    for _ in 0..10 {
        let _ = client.send_to(&bytes, server);
        if let Ok(got) = client.recv_from(&mut buf) {
            answer = Some(got);
            break;
        }
    }
    let (n, from) = answer.expect("an answer within 2 s");
    assert_eq!(from, server);
    MessageDecoder::<Attribute>::new()
        .decode_from_bytes(&buf[..n])
        .expect("a STUN message")
        .expect("with attributes the client understands")
}

#[test]
fn a_standard_stun_client_learns_its_address_with_and_without_the_echo() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let without_echo = Config::default();
    assert!(without_echo.echo.is_none());
    let with_echo = Config {
        echo: Some(EchoConfig::default()),
        ..Config::default()
    };
    for config in [without_echo, with_echo] {
        let server = rt.block_on(TestServer::start(config));
        // The UDP port has the TCP port's number.
        let stun_server = server.addr;
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();

        // A bare Binding request.
        let id = TransactionId::new([3; 12]);
        let answer = ask(
            &client,
            stun_server,
            Message::new(MessageClass::Request, BINDING, id),
        );
        assert_eq!(answer.class(), MessageClass::SuccessResponse);
        assert_eq!(answer.method(), BINDING);
        assert_eq!(answer.transaction_id(), id);
        let mapped = answer
            .get_attribute::<XorMappedAddress>()
            .expect("XOR-MAPPED-ADDRESS");
        assert_eq!(mapped.address(), client.local_addr().unwrap());

        // With SOFTWARE and FINGERPRINT, as many clients send (the decoder checks the
        // answer's fingerprint).
        let id = TransactionId::new([4; 12]);
        let mut request = Message::new(MessageClass::Request, BINDING, id);
        request.add_attribute(Attribute::Software(
            Software::new("a standard client".to_string()).unwrap(),
        ));
        let fingerprint = Fingerprint::new(&request).unwrap();
        request.add_attribute(Attribute::Fingerprint(fingerprint));
        let answer = ask(&client, stun_server, request);
        assert_eq!(answer.class(), MessageClass::SuccessResponse);
        assert_eq!(answer.transaction_id(), id);
        assert!(answer.get_attribute::<Fingerprint>().is_some());
        assert_eq!(
            answer
                .get_attribute::<XorMappedAddress>()
                .map(|a| a.address()),
            Some(client.local_addr().unwrap())
        );
        rt.block_on(server.stop());
    }
}
