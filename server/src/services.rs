//! Users hosted by the server itself (no connection behind them): the echo test.

use fala_proto::{CallId, EndReason, MediaAddr};
use serde_bytes::ByteBuf;

use crate::echo::ECHO_NAME;
use crate::hub::{State, User};

impl State {
    /// Registers the echo user, receiving media on `port` of the server's address.
    pub(crate) fn add_echo_user(&mut self, echo: crate::echo::EchoHandle) {
        let identity = echo.identity();
        self.users.insert(
            ECHO_NAME.to_string(),
            User {
                name: ECHO_NAME.to_string(),
                // 0.0.0.0: each viewer is shown the address it reached the server on.
                media: MediaAddr::new(std::net::Ipv4Addr::UNSPECIFIED, echo.port),
                identity,
                conn: None,
                call: None,
                away_since: None,
            },
        );
        self.echo = Some(echo);
    }

    /// A call reached a built-in service: the echo answers at once.
    pub(crate) fn service_incoming(&mut self, call_id: CallId, service_key: &str) {
        let Some(call) = self.calls.get(&call_id).cloned() else {
            return;
        };
        let (Some(echo), true) = (self.echo.clone(), service_key == ECHO_NAME) else {
            self.finish(call_id, EndReason::Declined, EndReason::Declined);
            return;
        };
        let Some(caller) = self.users.get(&call.caller) else {
            return;
        };
        let viewer = caller.conn.and_then(|c| self.conns.get(&c));
        let echo_media = self.users[ECHO_NAME].media_for(viewer);
        let answer = echo.start(
            call_id,
            caller.media,
            call.commit.as_deref().map(|k| k.as_slice()),
        );
        match answer {
            Some(signed) => self.await_reveal(
                call_id,
                echo_media,
                ByteBuf::from(signed.key.to_vec()),
                ByteBuf::from(signed.signature.to_vec()),
            ),
            None => self.connect(call_id, echo_media),
        }
    }

    /// The caller of a service revealed its key: the service checks it and goes encrypted.
    pub(crate) fn service_reveal(
        &mut self,
        call_id: CallId,
        caller_identity: [u8; fala_proto::identity::IDENTITY_LEN],
        caller: (&[u8], &[u8]),
    ) {
        if let Some(echo) = &self.echo {
            echo.reveal(call_id, &caller_identity, caller);
        }
    }

    /// Lets a service know its call is over.
    pub(crate) fn service_call_ended(&mut self, call_id: CallId) {
        if let Some(echo) = &self.echo {
            echo.end(call_id);
        }
    }
}
