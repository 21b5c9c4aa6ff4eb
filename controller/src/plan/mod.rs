//! Plan: migration / VF / memory policies, pure code.
