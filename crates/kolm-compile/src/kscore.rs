//! stub
pub struct KScore;
pub struct KScoreInputs;
