//! Moving tensors between host memory and a device: the one place that reads a tensor's
//! values back, or builds an index tensor from host numbers; and the training device.

use burn::prelude::*;

/// Creation on `device` in f32, whatever its float type: decoding's arithmetic over the
/// vocabulary (sampling, repetition limits) stays in f32 under half precision.
pub fn in_f32(device: &Device) -> burn::tensor::TensorCreationOptions {
    burn::tensor::TensorCreationOptions::new(device.clone())
        .with_dtype(burn::tensor::FloatDType::F32.into())
}

/// A float tensor's values, row-major, as f32.
pub fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}

/// An integer tensor's values, row-major, as indices (flex keeps integers as i32).
pub fn indices<const D: usize>(t: Tensor<D, Int>) -> Vec<usize> {
    t.into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("integer data")
        .into_iter()
        .map(|x| x as usize)
        .collect()
}

/// A 1-D index tensor (for `select`, embeddings, labels).
pub fn index_tensor(ids: &[usize], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(
        TensorData::new(
            ids.iter().map(|&i| i as i64).collect::<Vec<_>>(),
            [ids.len()],
        ),
        device,
    )
}

/// `device` with autodiff, and with burn's balanced gradient checkpointing when asked
/// (memory-bound activations recomputed in the backward pass instead of kept).
pub fn autodiff_device(device: &Device, gradient_checkpointing: bool) -> Device {
    let device = device.clone().autodiff();
    if gradient_checkpointing {
        device.gradient_checkpointing()
    } else {
        device
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let device = Device::flex();
        let t = Tensor::<2>::from_data(
            TensorData::new(vec![1.5f32, -2.0, 0.25, 8.0], [2, 2]),
            &device,
        );
        assert_eq!(floats(t), vec![1.5, -2.0, 0.25, 8.0]);
        assert_eq!(indices(index_tensor(&[3, 0, 7], &device)), vec![3, 0, 7]);
    }
}
