//! One integration test binary (matklad's layout): it compiles once, which matters on a
//! 2-core machine.

mod adversarial;
mod change_stream;
mod chargeback;
mod cluster;
mod crash;
mod durability;
mod earnings_hold;
mod economy;
mod engine_concurrency;
mod engine_props;
mod engine_rules;
mod engine_rules_caps;
mod fence;
mod history;
mod hostile_http;
mod layers;
mod legacy_period;
mod ops_kit;
mod pinned;
mod promotions;
mod purchase;
mod read_model;
mod read_model_debt;
mod refund;
mod reversal_order;
mod review_economy;
mod server_http;
mod server_shutdown;
mod server_tcp;
mod simulation;
mod soak;
mod support;
mod tls;
mod videos;
