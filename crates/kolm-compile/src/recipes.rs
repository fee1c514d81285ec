//! stub
pub trait Tokenize {
    fn tokenize(&self, text: &str) -> Vec<u32>;
}
pub struct MineParams;
pub struct RecipePack;
