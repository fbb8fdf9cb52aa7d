//! The gateway scenarios (idle, fanout, churn, resume) speak the gateway protocol, which does
//! not exist yet. Their command lines are in place; running one says so instead of faking it.

use anyhow::bail;

use crate::cli::GatewayArgs;

pub fn not_yet(name: &str, _args: &GatewayArgs) -> anyhow::Result<()> {
    bail!(
        "`{name}` is not yet available: needs the gateway protocol (issue 3/4). \
         For raw TCP load use `ringport-bench echo` (and `echo --idle` for memory per idle connection)."
    )
}
