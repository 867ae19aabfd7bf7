//! A user-defined function on a Volley cluster. The function's code is in
//! `common/functions.rs`, compiled into this client and into the executors
//! (`udf_executor.rs`); the scheduler plans the call with the types the
//! client resolved and needs no code.
//!
//! ```sh
//! cargo run -p volley-client --example udf                  # embedded cluster
//! VOLLEY_SCHEDULER=http://127.0.0.1:50050 \
//!     cargo run -p volley-client --example udf              # a cluster whose
//!                                                           # executors run udf_executor
//! ```

#[path = "common/functions.rs"]
mod functions;

use volley_client::tpch::{default_tpch_dir, generate_tpch, register_tpch};
use volley_client::{Context, EmbeddedClusterConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = match std::env::var("VOLLEY_SCHEDULER") {
        Ok(url) => {
            let ctx = Context::remote(&url).await?;
            ctx.register_udfs(&functions::registry());
            ctx
        }
        // The embedded cluster's executors get the functions too.
        Err(_) => {
            Context::embedded_with(EmbeddedClusterConfig {
                udfs: functions::registry(),
                ..EmbeddedClusterConfig::with_executors(2)
            })
            .await?
        }
    };
    let dir = default_tpch_dir(0.01);
    generate_tpch(0.01, &dir, 4)?;
    register_tpch(&ctx, &dir).await?;
    ctx.sql(
        "SELECT l_returnflag, \
                round(sum(net_price(CAST(l_extendedprice AS DOUBLE), CAST(l_discount AS DOUBLE))), 2) AS net \
         FROM lineitem GROUP BY l_returnflag ORDER BY l_returnflag",
    )
    .await?
    .show()
    .await?;
    Ok(())
}
