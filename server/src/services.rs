//! Users hosted by the server itself (no connection behind them), such as the echo test.

use fala_proto::{CallId, EndReason};

use crate::hub::State;

impl State {
    /// A call reached a built-in service. Until a service claims it, it is declined.
    pub(crate) fn service_incoming(&mut self, call_id: CallId, _service_key: &str) {
        self.finish(call_id, EndReason::Declined, EndReason::Declined);
    }

    /// Lets a service know its call is over.
    pub(crate) fn service_call_ended(&mut self, _call_id: CallId) {}
}
