//! Gradients by parameter name: for checks (every parameter learns) and logging.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::Gradients;

use crate::model::weights::{read_named, stored, ParamReader, StoredTensor};

/// Reads gradients in checkpoint layout.
struct Grads<'a>(&'a Gradients);

impl ParamReader for Grads<'_> {
    fn read<const D: usize>(
        &mut self,
        _name: &str,
        param: &Param<Tensor<D>>,
        transpose: bool,
    ) -> Option<StoredTensor> {
        param.val().grad(self.0).map(|g| stored(g, transpose))
    }
}

fn read_gradients<M: Module, R: ParamReader>(
    module: &M,
    reader: &mut R,
) -> Vec<(String, Option<Vec<f32>>)> {
    read_named(module, "", reader)
        .into_iter()
        .map(|(name, g)| (name, g.map(|g| g.values)))
        .collect()
}

/// Every parameter's checkpoint name with its gradient in checkpoint layout (None when it
/// received none).
pub fn named_gradients<M: Module>(
    module: &M,
    grads: &Gradients,
) -> Vec<(String, Option<Vec<f32>>)> {
    read_gradients(module, &mut Grads(grads))
}

/// Every parameter's checkpoint name with its gradient in burn's own layout, as the optimizer
/// takes them (see [`crate::model::weights::update_native`]). Each gradient leaves `grads` as
/// it is read, so that a model's gradients are never held twice.
pub fn native_gradients<M: Module>(
    module: &M,
    mut grads: Gradients,
) -> Vec<(String, Option<Vec<f32>>)> {
    read_gradients(module, &mut TakeGrads(&mut grads))
}

/// Removes gradients from the container as it reads them, in burn's layout.
struct TakeGrads<'a>(&'a mut Gradients);

impl ParamReader for TakeGrads<'_> {
    fn read<const D: usize>(
        &mut self,
        _name: &str,
        param: &Param<Tensor<D>>,
        _transpose: bool,
    ) -> Option<StoredTensor> {
        param.val().grad_remove(self.0).map(|g| stored(g, false))
    }
}
