//! Users hosted by the server itself (no connection behind them): the echo test.

use fala_proto::{CallId, EndReason, MediaAddr};

use crate::echo::ECHO_NAME;
use crate::hub::{State, User};

impl State {
    /// Registers the echo user, receiving media on `port` of the server's address.
    pub(crate) fn add_echo_user(
        &mut self,
        echo: crate::echo::EchoHandle,
        identity: [u8; fala_proto::identity::IDENTITY_LEN],
    ) {
        self.users.insert(
            ECHO_NAME.to_string(),
            User {
                name: ECHO_NAME.to_string(),
                // 0.0.0.0: each viewer is shown the address it reached the server on.
                media: MediaAddr::new(std::net::Ipv4Addr::UNSPECIFIED, echo.port),
                identity,
                conn: None,
                call: None,
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
        let key = echo.start(
            call_id,
            caller.media,
            call.caller_key.as_deref().map(|k| k.as_slice()),
        );
        self.connect(call_id, echo_media, key);
    }

    /// Lets a service know its call is over.
    pub(crate) fn service_call_ended(&mut self, call_id: CallId) {
        if let Some(echo) = &self.echo {
            echo.end(call_id);
        }
    }
}
