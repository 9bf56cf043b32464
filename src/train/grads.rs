//! Gradients by parameter name: for checks (every parameter learns) and logging.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::Gradients;

use crate::model::weights::{read_named, stored, ParamReader, StoredTensor};

struct Grads<'a>(&'a Gradients);

impl ParamReader for Grads<'_> {
    fn read<const D: usize>(
        &mut self,
        param: &Param<Tensor<D>>,
        transpose: bool,
    ) -> Option<StoredTensor> {
        param.val().grad(self.0).map(|g| stored(g, transpose))
    }
}

/// Every parameter's checkpoint name with its gradient in checkpoint layout (None when it
/// received none).
pub fn named_gradients<M: Module>(
    module: &M,
    grads: &Gradients,
) -> Vec<(String, Option<Vec<f32>>)> {
    read_named(module, "", &mut Grads(grads))
        .into_iter()
        .map(|(name, g)| (name, g.map(|g| g.values)))
        .collect()
}
