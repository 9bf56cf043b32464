//! Gradients by parameter name: for checks (every parameter learns) and logging.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::Gradients;

use crate::model::weights::hf_name;

struct NamedGrads<'a> {
    grads: &'a Gradients,
    path: Vec<(String, String)>,
    out: Vec<(String, Option<Vec<f32>>)>,
}

impl ModuleVisitor for NamedGrads<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path
            .push((name.to_string(), container_type.to_string()));
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let (name, _) = hf_name("", &self.path);
        let grad = param.val().grad(self.grads).map(|g| {
            g.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32 data")
        });
        self.out.push((name, grad));
    }
}

/// Every parameter's checkpoint name with its gradient (None when it received none).
pub fn named_gradients<M: Module>(
    module: &M,
    grads: &Gradients,
) -> Vec<(String, Option<Vec<f32>>)> {
    let mut v = NamedGrads {
        grads,
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}
