import CryLabOneDNN

/// The compute backend layers run on: oneDNN. Layers call only `ComputeBackend`'s protocols.
let defaultBackend: any ComputeBackend = ConvolutionBackend.oneDNN
