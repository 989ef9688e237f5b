import CryLabNN
import Foundation

/// Keras's description of a model (`model_config`), as Keras 3 writes it into a legacy HDF5
/// file, so that `keras.models.load_model("x.h5")` rebuilds a CryLab model with no code.
///
/// Layers are described with the fields Keras 3.15 needs; every tensor carries its shape and
/// the layer it comes from (`keras_history`), so the functional graph, including a U-Net's skip
/// connections, is rebuilt as it was.
public enum KerasModelConfig {
    /// The JSON, or nil when a layer has no Keras counterpart.
    public static func json(for model: Model) throws -> String? {
        var shapes: [[Int]] = [[1] + model.inputShape]
        var names = ["input_layer"]
        var layers: [[String: Any]] = [[
            "class_name": "InputLayer", "name": "input_layer", "inbound_nodes": [] as [Any],
            "config": ["batch_shape": [NSNull()] + model.inputShape.map { $0 as Any }, "dtype": "float32",
                       "sparse": false, "ragged": false, "name": "input_layer"] as [String: Any],
        ]]
        for node in model.nodes {
            let inputShapes = node.inputs.map { shapes[$0] }
            let output = try node.layer.outputShape(inputShapes: inputShapes)
            guard var config = layerConfig(node.layer) else { return nil }
            config["name"] = node.layer.name
            config["trainable"] = node.layer.trainable
            config["dtype"] = "float32"
            let tensors: [[String: Any]] = node.inputs.map { value in
                ["class_name": "__keras_tensor__",
                 "config": ["shape": [NSNull()] + shapes[value].dropFirst().map { $0 as Any }, "dtype": "float32",
                            "keras_history": [names[value], 0, 0] as [Any]] as [String: Any]]
            }
            let arguments: [Any] = tensors.count == 1 ? [tensors[0]] : [tensors]
            layers.append(["class_name": node.layer.kerasClass, "name": node.layer.name, "config": config,
                           "inbound_nodes": [["args": arguments, "kwargs": [String: Any]()]]])
            shapes.append(output)
            names.append(node.layer.name)
        }
        let root: [String: Any] = [
            "class_name": "Functional",
            "config": ["name": "crylab", "trainable": true, "layers": layers,
                       "input_layers": ["input_layer", 0, 0] as [Any], "output_layers": [names.last!, 0, 0] as [Any]] as [String: Any],
        ]
        let data = try JSONSerialization.data(withJSONObject: root, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    static func layerConfig(_ layer: any Layer) -> [String: Any]? {
        switch layer {
        case let conv as Conv2D:
            return ["filters": conv.filters, "kernel_size": [conv.kernelSize, conv.kernelSize], "strides": [conv.stride, conv.stride],
                    "padding": conv.padding.rawValue, "data_format": "channels_last", "activation": conv.activation.rawValue,
                    "use_bias": conv.bias != nil]
        case let conv as Conv2DTranspose:
            return ["filters": conv.filters, "kernel_size": [conv.kernelSize, conv.kernelSize], "strides": [conv.stride, conv.stride],
                    "padding": conv.padding.rawValue, "data_format": "channels_last", "activation": conv.activation.rawValue,
                    "use_bias": conv.bias != nil]
        case let dense as Dense:
            return ["units": dense.units, "activation": dense.activation.rawValue, "use_bias": dense.bias != nil]
        case let norm as BatchNormalization:
            return ["axis": -1, "momentum": Double(norm.momentum), "epsilon": Double(norm.epsilon), "center": true, "scale": true]
        case let pool as MaxPool2D:
            return ["pool_size": [pool.poolSize, pool.poolSize], "strides": [pool.stride, pool.stride],
                    "padding": pool.padding.rawValue, "data_format": "channels_last"]
        case let up as UpSampling2D:
            return ["size": [up.size, up.size], "data_format": "channels_last", "interpolation": "nearest"]
        case let dropout as Dropout:
            return ["rate": Double(dropout.rate)]
        case let leaky as LeakyReLU:
            return ["negative_slope": Double(leaky.negativeSlope)]
        case is Concatenate:
            return ["axis": -1]
        case is Flatten, is GlobalAveragePooling2D:
            return ["data_format": "channels_last"]
        case is ReLU:
            return [:]
        default:
            return nil
        }
    }
}
