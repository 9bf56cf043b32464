//! Gradients by parameter name: for checks (every parameter learns) and logging.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::Gradients;

use crate::model::kernels::on_cpu_backend;
use crate::model::weights::{read_named, stored, ParamReader, StoredTensor};

/// Reads gradients in checkpoint layout.
struct Grads<'a>(&'a Gradients);

impl ParamReader for Grads<'_> {
    type Out = StoredTensor;
    fn read<const D: usize>(
        &mut self,
        _name: &str,
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

/// One parameter's gradient in burn's layout, flattened: in host memory on the CPU backend,
/// where the optimizer's update is a host loop, and left on the device elsewhere, so that a
/// GPU's step never copies the model's gradients through the host.
#[derive(Clone, Debug)]
// One per parameter and step, moved a few times: boxing the tensor handle would save nothing.
#[allow(clippy::large_enum_variant)]
pub enum Grad {
    Host(Vec<f32>),
    Device(Tensor<1>),
}

impl Grad {
    /// The values in host memory (read from the device if need be).
    pub fn into_host(self) -> Vec<f32> {
        match self {
            Grad::Host(v) => v,
            Grad::Device(t) => crate::tensor::floats(t),
        }
    }
}

/// Gradients by parameter name, in burn's layout (None where a parameter got none).
pub type NamedGrads = Vec<(String, Option<Grad>)>;

/// Every parameter's checkpoint name with its gradient in burn's own layout, as the optimizer
/// takes them (see [`crate::model::weights::update_native`]). Each gradient leaves `grads` as
/// it is read, so that a model's gradients are never held twice.
pub fn native_gradients<M: Module>(module: &M, mut grads: Gradients) -> NamedGrads {
    read_named(module, "", &mut TakeGrads(&mut grads))
}

/// Removes gradients from the container as it reads them, in burn's layout.
struct TakeGrads<'a>(&'a mut Gradients);

impl ParamReader for TakeGrads<'_> {
    type Out = Grad;
    fn read<const D: usize>(
        &mut self,
        _name: &str,
        param: &Param<Tensor<D>>,
        _transpose: bool,
    ) -> Option<Grad> {
        let g = param.val().grad_remove(self.0)?;
        Some(if on_cpu_backend(&g.device()) {
            Grad::Host(stored(g, false).values)
        } else {
            let n = g.shape().num_elements();
            Grad::Device(g.reshape([n]))
        })
    }
}
