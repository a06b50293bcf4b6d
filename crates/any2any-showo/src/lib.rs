//! Show-o (showlab/Show-o): a Phi decoder with an omni-attention mask that does MaskGIT
//! text→image over MAGVIT-v2 codes and autoregressive image→text.

pub mod backend;
pub mod config;
pub mod edit;
pub mod magvit;
pub mod maskgit;
pub mod mmu;
pub mod model;
pub mod prompt;

pub use backend::{load, ShowoBackend, COMPONENTS, MAGVIT_LAYOUT};
pub use config::{ShowoConfig, Vocab};
pub use maskgit::{t2i_generate, t2i_generate_batch, MaskgitRow, T2iOptions};
pub use model::ShowoModel;

/// Whether a config.json is a Show-o checkpoint (`_class_name: "Showo"`).
pub fn matches(cfg: &serde_json::Value) -> bool {
    cfg.get("_class_name").and_then(|v| v.as_str()) == Some("Showo")
}
