//! Image codecs: the discrete (VQ) and continuous autoencoders that turn pixels into the tokens or
//! latents a backbone consumes, and back.
//!
//! [`taming`] holds the convolutional building blocks shared by the taming-transformers family of
//! VQ autoencoders (Janus VQ-16, Chameleon's VQGAN, MAGVIT-v2 style tokenizers).

pub mod taming;
