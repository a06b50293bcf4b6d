//! Multi-part checkpoints: named components (a VAE, a UNet, an image tokenizer…), each with its
//! own folder, config, weights and dtype. They come from a diffusers `model_index.json`, from a
//! family's own layout ([`ComponentLayout`]), or from the user ([`LoadOptions::components`]: a
//! local directory or a hub id, fetched into the HF cache like the main model).

use super::{find_weights, hub_fetcher, is_hub_id, local_fetch, Lookup, WeightStore};
use crate::loading::{LoadOptions, ModelFiles};
use crate::{Error, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use std::path::{Path, PathBuf};

/// Config file names of a component, first found wins: models, schedulers, tokenizers, image
/// processors.
pub(super) const COMPONENT_CONFIGS: [&str; 4] = [
    "config.json",
    "scheduler_config.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
];
/// Sharded weights of a component (transformers and diffusers names).
const COMPONENT_INDEXES: [&str; 4] = [
    "model.safetensors.index.json",
    "diffusion_pytorch_model.safetensors.index.json",
    "pytorch_model.bin.index.json",
    "diffusion_pytorch_model.bin.index.json",
];
/// Single-file weights of a component (transformers and diffusers names).
const COMPONENT_SINGLES: [&str; 5] = [
    "model.safetensors",
    "diffusion_pytorch_model.safetensors",
    "pytorch_model.bin",
    "diffusion_pytorch_model.bin",
    "model.pth",
];
/// In a local folder without those: its safetensors, else its PyTorch checkpoints.
const COMPONENT_GLOBS: [&[&str]; 2] = [&["safetensors"], &["ckpt", "pth", "bin"]];

/// One named part of a checkpoint, resolved to local paths.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// Its name (`vae`, `unet`, `magvit`, `vqgan`): the model_index.json key, the family's
    /// name for it, or the user's.
    pub name: String,
    /// Its folder (for a hub id, in the snapshot of the HF cache).
    pub dir: PathBuf,
    /// Its config (`config.json`, `scheduler_config.json`, … or a family's own file name).
    pub config: Option<PathBuf>,
    /// Its weight files (every shard of an index); empty for a part without weights (a
    /// scheduler, a tokenizer).
    pub weights: Vec<PathBuf>,
    /// The dtype it loads in regardless of the model's (e.g. a VAE kept in f32); `None`: the
    /// model's.
    pub dtype: Option<DType>,
    /// Whether the model loads without it (a family's layout says so; model_index.json and user
    /// components are required).
    pub optional: bool,
    /// `(library, class)` of its model_index.json entry (`("diffusers", "AutoencoderKL")`).
    pub class: Option<(String, String)>,
}

/// One way a family stores a component: a weights file and the configs that may go with it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayoutFile {
    /// The weights file name.
    pub weights: &'static str,
    /// The config file names next to it, first found wins (none found: `config` is `None`).
    pub configs: &'static [&'static str],
}

/// Where a family keeps one component in its own layout (Show-o's `magvit/`, Chameleon's VQGAN
/// next to the checkpoint or in `tokenizer/`). [`ModelFiles::layout_component`] finds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ComponentLayout {
    /// The component's name (also the name `--component NAME=…` replaces it by).
    pub name: &'static str,
    /// The folders looked in, relative to the model directory, in order (`""`: the directory).
    pub dirs: &'static [&'static str],
    /// Within one folder, the files tried in order.
    pub files: &'static [LayoutFile],
    /// The dtype it loads in regardless of the model's; `None`: the model's.
    pub dtype: Option<DType>,
    /// Whether the model loads without it.
    pub optional: bool,
}

impl ComponentLayout {
    /// The layout's folders under the model directory `root`, in order.
    pub fn dirs_under(&self, root: &Path) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|d| {
                if d.is_empty() {
                    root.to_path_buf()
                } else {
                    root.join(d)
                }
            })
            .collect()
    }

    /// The component in the first of `dirs` holding one of the layout's files (in order).
    pub fn find_in(&self, dirs: &[PathBuf]) -> Option<Component> {
        dirs.iter().find_map(|dir| {
            self.files.iter().find_map(|f| {
                let w = dir.join(f.weights);
                w.is_file().then(|| Component {
                    name: self.name.to_string(),
                    dir: dir.clone(),
                    config: f.configs.iter().map(|c| dir.join(c)).find(|p| p.is_file()),
                    weights: vec![w],
                    dtype: self.dtype,
                    optional: self.optional,
                    class: None,
                })
            })
        })
    }

    /// The layout's weight file names, for messages.
    fn file_names(&self) -> String {
        self.files
            .iter()
            .map(|f| f.weights)
            .collect::<Vec<_>>()
            .join(" / ")
    }
}

/// A component's config and weights in a folder; `Ok(None)` when it holds neither.
pub(super) fn read_component(name: &str, l: &Lookup) -> Result<Option<Component>> {
    let config = l.first_of(&COMPONENT_CONFIGS)?;
    let weights = find_weights(l, &COMPONENT_INDEXES, &COMPONENT_SINGLES, &COMPONENT_GLOBS)?;
    let anchor = match (&config, &weights) {
        (Some(c), _) => c.clone(),
        (None, Some(w)) => w.anchor.clone(),
        (None, None) => return Ok(None),
    };
    Ok(Some(Component {
        name: name.to_string(),
        dir: l
            .local
            .clone()
            .unwrap_or_else(|| super::parent_dir(&anchor)),
        config,
        weights: weights.map(|w| w.files).unwrap_or_default(),
        dtype: None,
        optional: false,
        class: None,
    }))
}

/// The error for a folder with no config and no weights of component `name`.
fn nothing_in(l: &Lookup, name: &str) -> Error {
    let glob = if l.local.is_some() {
        ", *.safetensors, *.ckpt, *.pth or *.bin"
    } else {
        ""
    };
    Error::MissingFile {
        dir: l.here(),
        what: format!("config or weights of component `{name}`"),
        looked_for: format!(
            "{}, {}, {}{glob}",
            COMPONENT_CONFIGS.join(", "),
            COMPONENT_INDEXES.join(", "),
            COMPONENT_SINGLES.join(", ")
        ),
    }
}

/// Refuses a component name that is not letters, digits, `_`, `-` and `.` (not leading).
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "component",
            format!("`{name}` is not a component name (letters, digits, `_`, `-`, `.`)"),
        ))
    }
}

/// Parses `NAME=DIR_OR_HUB_ID` (`vae=stabilityai/sdxl-vae`, `magvit=./magvit`); NAME is
/// letters, digits, `_`, `-` and `.`.
pub fn parse_component(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((name, source)) if !source.is_empty() && check_name(name).is_ok() => {
            Ok((name.to_string(), source.to_string()))
        }
        _ => Err(Error::invalid(
            "component",
            format!(
                "`{s}` is not NAME=DIR_OR_HUB_ID (NAME: letters, digits, `_`, `-`, `.`; e.g. vae=stabilityai/sdxl-vae)"
            ),
        )),
    }
}

impl Component {
    /// Component `name` from `source`: a local directory, or else a hub id (fetched into the HF
    /// cache; the cache only when offline).
    pub fn resolve(name: &str, source: &str, opts: &LoadOptions) -> Result<Self> {
        check_name(name)?;
        let p = Path::new(source);
        if p.is_dir() {
            return Self::from_dir(name, p);
        }
        let bad = |msg: &str| Error::invalid("component", format!("{name}={source}: {msg}"));
        if p.exists() {
            return Err(bad("a file, not a directory"));
        }
        if !is_hub_id(source) {
            return Err(bad(
                "no such directory, and not a hub id of the form owner/name",
            ));
        }
        Self::from_hub(name, source, opts)
    }

    /// Component `name` in a local folder: its config (`config.json`, …) and weights (an index,
    /// `model.safetensors`, `diffusion_pytorch_model.safetensors`, …, else its `*.safetensors`,
    /// else its PyTorch checkpoints). A folder with neither is an error naming both.
    pub fn from_dir(name: &str, dir: &Path) -> Result<Self> {
        let fetch = local_fetch(dir);
        let l = Lookup::local(&fetch, dir, Some(name));
        read_component(name, &l)?.ok_or_else(|| nothing_in(&l, name))
    }

    /// Component `name` from the root of hub repository `id` (transformers / diffusers file
    /// names), like [`Component::from_dir`].
    pub fn from_hub(name: &str, id: &str, opts: &LoadOptions) -> Result<Self> {
        let (fetch, offline) = hub_fetcher(id, opts)?;
        let l = Lookup::hub(&*fetch, id, offline, Some(name));
        read_component(name, &l)?.ok_or_else(|| nothing_in(&l, name))
    }

    /// Its own dtype, else `default`.
    pub fn dtype_or(&self, default: DType) -> DType {
        self.dtype.unwrap_or(default)
    }

    /// Its config, or an error naming the component and the files looked for.
    pub fn require_config(&self) -> Result<&Path> {
        self.config.as_deref().ok_or_else(|| Error::MissingFile {
            dir: format!("component `{}` ({})", self.name, self.dir.display()),
            what: format!("config of component `{}`", self.name),
            looked_for: COMPONENT_CONFIGS.join(", "),
        })
    }

    /// A `VarBuilder` over its weights, in its own dtype when it has one, else `default`.
    pub fn var_builder(&self, default: DType, device: &Device) -> Result<VarBuilder<'static>> {
        if self.weights.is_empty() {
            return Err(Error::MissingFile {
                dir: format!("component `{}` ({})", self.name, self.dir.display()),
                what: format!("weights of component `{}`", self.name),
                looked_for: format!(
                    "{}, {}",
                    COMPONENT_INDEXES.join(", "),
                    COMPONENT_SINGLES.join(", ")
                ),
            });
        }
        let store = WeightStore::open(&self.weights)?;
        Ok(VarBuilder::from_backend(
            Box::new(store),
            self.dtype_or(default),
            device.clone(),
        ))
    }

    /// Name, folder, config, dtype (`null`: the model's), weight file count, optional, class.
    pub fn summary_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "dir": self.dir.display().to_string(),
            "config": self.config.as_ref().map(|p| p.display().to_string()),
            "dtype": self.dtype.map(|d| d.as_str()),
            "weight_files": self.weights.len(),
            "optional": self.optional,
            "class": self.class.as_ref().map(|(lib, class)| format!("{lib}.{class}")),
        })
    }
}

impl std::fmt::Display for Component {
    /// `vae  DIR  (f32, 1 weight file)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.weights.len();
        write!(
            f,
            "{}  {}  ({}, {n} weight file{}{})",
            self.name,
            self.dir.display(),
            self.dtype.map_or("model dtype", |d| d.as_str()),
            if n == 1 { "" } else { "s" },
            if self.optional { ", optional" } else { "" }
        )
    }
}

impl ModelFiles {
    /// The component `name`, when the checkpoint has one.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.get(name)
    }

    /// A `VarBuilder` over component `name`'s weights, in its own dtype when it has one, else
    /// `default`; an error naming the component when there is none.
    pub fn component_var_builder(
        &self,
        name: &str,
        default: DType,
        device: &Device,
    ) -> Result<VarBuilder<'static>> {
        let c = self.component(name).ok_or_else(|| {
            let have: Vec<&str> = self.components.keys().map(String::as_str).collect();
            Error::MissingFile {
                dir: self.name.clone(),
                what: format!("component `{name}`"),
                looked_for: format!(
                    "a `{name}` component (this checkpoint has: {}; add one with --component {name}=DIR_OR_HUB_ID)",
                    if have.is_empty() { "none".to_string() } else { have.join(", ") }
                ),
            }
        })?;
        c.var_builder(default, device)
    }

    /// Replaces or adds the user's components ([`LoadOptions::components`]); a name given twice
    /// is an error.
    pub fn apply_components(&mut self, opts: &LoadOptions) -> Result<()> {
        for (i, (name, source)) in opts.components.iter().enumerate() {
            if opts.components[..i].iter().any(|(n, _)| n == name) {
                return Err(Error::invalid(
                    "component",
                    format!("`{name}` is given twice"),
                ));
            }
            let c = Component::resolve(name, source, opts)?;
            self.components.insert(name.clone(), c);
        }
        Ok(())
    }

    /// The component a family keeps in `layout`: the one of that name already in
    /// [`ModelFiles::components`] (a user's folder, read with the layout's file names when it
    /// has them), else the first of the layout's folders (then `extra_dirs`) holding one.
    /// `Ok(None)` when an optional one is nowhere; a required one is an error naming it.
    pub fn layout_component(
        &self,
        layout: &ComponentLayout,
        extra_dirs: &[PathBuf],
    ) -> Result<Option<Component>> {
        if let Some(c) = self.component(layout.name) {
            let mut found = match layout.find_in(std::slice::from_ref(&c.dir)) {
                Some(f) => f,
                None if !c.weights.is_empty() => c.clone(),
                None => {
                    return Err(Error::MissingFile {
                        dir: format!("component `{}` ({})", c.name, c.dir.display()),
                        what: format!("weights of component `{}`", c.name),
                        looked_for: layout.file_names(),
                    })
                }
            };
            found.dtype = c.dtype.or(layout.dtype);
            found.optional = layout.optional;
            found.class = c.class.clone();
            return Ok(Some(found));
        }
        let mut dirs = layout.dirs_under(&self.dir);
        dirs.extend_from_slice(extra_dirs);
        match layout.find_in(&dirs) {
            Some(c) => Ok(Some(c)),
            None if layout.optional => Ok(None),
            None => Err(Error::MissingFile {
                dir: self.name.clone(),
                what: format!("component `{}`", layout.name),
                looked_for: format!(
                    "{} in {}",
                    layout.file_names(),
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    /// Adds to [`ModelFiles::components`] each of a family's `layouts` found (see
    /// [`ModelFiles::layout_component`]), so they are listed like the others.
    pub fn add_layout_components(&mut self, layouts: &[ComponentLayout]) -> Result<()> {
        for l in layouts {
            if let Some(c) = self.layout_component(l, &[])? {
                self.components.insert(l.name.to_string(), c);
            }
        }
        Ok(())
    }

    /// [`Component::summary_json`] of every component, in name order.
    pub fn components_json(&self) -> serde_json::Value {
        self.components
            .values()
            .map(Component::summary_json)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_and_source() {
        assert_eq!(
            parse_component("vae=stabilityai/sdxl-vae").unwrap(),
            ("vae".to_string(), "stabilityai/sdxl-vae".to_string())
        );
        // only the first `=` splits
        assert_eq!(parse_component("m=./a=b").unwrap().1, "./a=b");
        for bad in ["vae", "vae=", "=dir", "../x=dir", "a b=dir"] {
            let e = parse_component(bad).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidArgument { name, .. } if name == "component"),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn shard_names_must_stay_inside() {
        for ok in [
            "a.safetensors",
            "model-00001-of-00002.safetensors",
            "..a",
            "a..b",
        ] {
            assert!(super::super::is_plain_name(ok), "{ok}");
        }
        let bad = [
            "../a.safetensors",
            "sub/../../a",
            "/etc/passwd",
            "",
            ".",
            "..",
            "sub/a.safetensors",
            "./a.safetensors",
            "..\\x",
            "C:\\x",
            "a\0b",
        ];
        for bad in bad {
            assert!(!super::super::is_plain_name(bad), "{bad}");
        }
    }

    #[test]
    fn local_pickle_glob_when_no_safetensors() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("vqgan.ckpt"), b"x").unwrap();
        std::fs::write(d.path().join("notes.txt"), b"x").unwrap();
        let c = Component::from_dir("vqgan", d.path()).unwrap();
        assert_eq!(c.weights, vec![d.path().join("vqgan.ckpt")]);
        assert_eq!(c.config, None);
        assert_eq!(
            super::super::files_with_ext(d.path(), &["txt"])
                .unwrap()
                .len(),
            1
        );
    }
}
