import CDNNL
import CryLabTensor
import Foundation

extension DNNLConvolution {
    // MARK: Descriptors (oneDNN's logical dimension order is always N, C, H, W / O, I, H, W)

    func descriptor(_ dims: [Int], _ tag: dnnl_format_tag_t, type: dnnl_data_type_t = dnnl_f32) -> dnnl_memory_desc_t {
        var d = dnnl_memory_desc_t()
        let dims64 = dims.map { Int64($0) }
        Self.check(dnnl_memory_desc_init_by_tag(&d, Int32(dims.count), dims64, type, tag), "describing \(dims)")
        return d
    }

    // x: [batch, height, width, channels]
    func sourceDescriptor(_ g: ConvolutionGeometry, _ type: dnnl_data_type_t = dnnl_f32,
                                  _ tag: dnnl_format_tag_t = dnnl_nhwc) -> dnnl_memory_desc_t {
        descriptor([g.batch, g.inputChannels, g.inputHeight, g.inputWidth], tag, type: type)
    }

    // y: [batch, outputHeight, outputWidth, outputChannels]
    func destinationDescriptor(_ g: ConvolutionGeometry, _ type: dnnl_data_type_t = dnnl_f32,
                                       _ tag: dnnl_format_tag_t = dnnl_nhwc) -> dnnl_memory_desc_t {
        descriptor([g.batch, g.outputChannels, g.outputHeight, g.outputWidth], tag, type: type)
    }

    func weightsDescriptor(_ g: ConvolutionGeometry, _ tag: dnnl_format_tag_t,
                                   _ type: dnnl_data_type_t = dnnl_f32) -> dnnl_memory_desc_t {
        descriptor([g.outputChannels, g.inputChannels, g.kernelHeight, g.kernelWidth], tag, type: type)
    }

    func biasDescriptor(_ g: ConvolutionGeometry) -> dnnl_memory_desc_t {
        descriptor([g.outputChannels], dnnl_x)
    }

    /// Activations are NHWC for direct kernels unless asked otherwise; Winograd ones choose their own (blocked) layout.
    func activationTag(_ algorithm: dnnl_alg_kind_t) -> dnnl_format_tag_t {
        algorithm == dnnl_convolution_winograd ? dnnl_format_tag_any : dnnl_nhwc
    }

    /// `operandType` is the type of what the kernel reads (input, weights, output gradient);
    /// what it writes is always fp32.
    func forwardDescriptor(_ g: ConvolutionGeometry, bias: Bool, operandType: dnnl_data_type_t,
                                   algorithm: dnnl_alg_kind_t, activations: dnnl_format_tag_t) -> dnnl_convolution_desc_t {
        var source = sourceDescriptor(g, operandType, activations)
        var destination = destinationDescriptor(g, dnnl_f32, activations)
        var weights = weightsDescriptor(g, dnnl_format_tag_any, operandType)
        var biasMD = biasDescriptor(g)
        var d = dnnl_convolution_desc_t()
        let status = withUnsafePointer(to: &biasMD) { biasPointer in
            dnnl_convolution_forward_desc_init(
                &d, dnnl_forward_training, algorithm, &source, &weights, bias ? biasPointer : nil,
                &destination, strides(g), [Int64(g.padTop), Int64(g.padLeft)], [Int64(g.padBottom), Int64(g.padRight)])
        }
        Self.check(status, "describing \(g)")
        return d
    }

    func strides(_ g: ConvolutionGeometry) -> [Int64] { [Int64(g.stride), Int64(g.stride)] }

    /// nil if oneDNN has no kernel for this shape in bf16, with Winograd or in the layouts asked for
    /// (fp32 direct in NHWC always has one).
    func make(_ g: ConvolutionGeometry, _ pass: Pass, operandType: dnnl_data_type_t,
                      algorithm: dnnl_alg_kind_t = dnnl_convolution_direct, activations: dnnl_format_tag_t? = nil) -> Prepared? {
        let activations = activations ?? activationTag(algorithm)
        let optional = operandType == dnnl_bf16 || activations != dnnl_nhwc
        func created(_ status: dnnl_status_t, _ what: @autoclosure () -> String) -> Bool {
            if status == dnnl_unimplemented && optional { return false }
            Self.check(status, what())
            return true
        }
        var attributes: dnnl_primitive_attr_t?
        Self.check(dnnl_primitive_attr_create(&attributes), "creating attributes")
        defer { dnnl_primitive_attr_destroy(attributes) }
        Self.check(dnnl_primitive_attr_set_scratchpad_mode(attributes, dnnl_scratchpad_mode_user), "scratchpad mode")

        var descriptor: dnnl_primitive_desc_t?
        let weightsQuery: dnnl_query_t
        // The activation operands' queries: src or diff_src, dst or diff_dst.
        let sourceQuery: dnnl_query_t, destinationQuery: dnnl_query_t
        switch pass {
        case let .forward(bias, relu):
            if relu {
                var postOps: dnnl_post_ops_t?
                Self.check(dnnl_post_ops_create(&postOps), "creating post-ops")
                Self.check(dnnl_post_ops_append_eltwise(postOps, 1, dnnl_eltwise_relu, 0, 0), "appending ReLU")
                Self.check(dnnl_primitive_attr_set_post_ops(attributes, postOps), "setting post-ops")
                dnnl_post_ops_destroy(postOps)
            }
            var d = forwardDescriptor(g, bias: bias, operandType: operandType, algorithm: algorithm, activations: activations)
            guard created(dnnl_primitive_desc_create(&descriptor, &d, attributes, engine, nil), "choosing a forward kernel for \(g)")
            else { return nil }
            (weightsQuery, sourceQuery, destinationQuery) = (dnnl_query_weights_md, dnnl_query_src_md, dnnl_query_dst_md)
        case .backwardData:
            guard let hint = forwardHint(g, operandType: operandType, algorithm: algorithm, activations: activations) else { return nil }
            defer { dnnl_primitive_desc_destroy(hint) }
            var diffSource = sourceDescriptor(g, dnnl_f32, activations)
            var diffDestination = destinationDescriptor(g, operandType, activations)
            var weights = weightsDescriptor(g, dnnl_format_tag_any, operandType)
            var d = dnnl_convolution_desc_t()
            Self.check(dnnl_convolution_backward_data_desc_init(
                &d, algorithm, &diffSource, &weights, &diffDestination, strides(g),
                [Int64(g.padTop), Int64(g.padLeft)], [Int64(g.padBottom), Int64(g.padRight)]), "describing backward-data \(g)")
            guard created(dnnl_primitive_desc_create(&descriptor, &d, attributes, engine, hint), "choosing a backward-data kernel for \(g)")
            else { return nil }
            (weightsQuery, sourceQuery, destinationQuery) = (dnnl_query_weights_md, dnnl_query_diff_src_md, dnnl_query_diff_dst_md)
        case let .backwardWeights(bias):
            guard let hint = forwardHint(g, operandType: operandType, algorithm: algorithm, activations: activations) else { return nil }
            defer { dnnl_primitive_desc_destroy(hint) }
            var source = sourceDescriptor(g, operandType, activations)
            var diffDestination = destinationDescriptor(g, operandType, activations)
            var diffWeights = weightsDescriptor(g, dnnl_format_tag_any)
            var diffBias = biasDescriptor(g)
            var d = dnnl_convolution_desc_t()
            let status = withUnsafePointer(to: &diffBias) { biasPointer in
                dnnl_convolution_backward_weights_desc_init(
                    &d, algorithm, &source, &diffWeights, bias ? biasPointer : nil, &diffDestination,
                    strides(g), [Int64(g.padTop), Int64(g.padLeft)], [Int64(g.padBottom), Int64(g.padRight)])
            }
            Self.check(status, "describing backward-weights \(g)")
            guard created(dnnl_primitive_desc_create(&descriptor, &d, attributes, engine, hint), "choosing a backward-weights kernel for \(g)")
            else { return nil }
            (weightsQuery, sourceQuery, destinationQuery) = (dnnl_query_diff_weights_md, dnnl_query_src_md, dnnl_query_diff_dst_md)
        }
        var primitive: dnnl_primitive_t?
        Self.check(dnnl_primitive_create(&primitive, descriptor), "creating a primitive for \(g)")

        var chosen = dnnl_primitive_desc_query_md(descriptor, weightsQuery, 0)!.pointee
        var keras = weightsDescriptor(g, dnnl_hwio)
        var reorder: dnnl_primitive_t?
        if dnnl_memory_desc_equal(&chosen, &keras) == 0 {
            if case .backwardWeights = pass {
                reorder = reorderPrimitive(from: chosen, to: keras, "weights reorder")
            } else {
                reorder = reorderPrimitive(from: keras, to: chosen, "weights reorder")
            }
        }
        var blocked: BlockedActivations?
        if activations != dnnl_nhwc {
            let source = dnnl_primitive_desc_query_md(descriptor, sourceQuery, 0)!.pointee
            let destination = dnnl_primitive_desc_query_md(descriptor, destinationQuery, 0)!.pointee
            let nhwcSource = sourceDescriptor(g), nhwcDestination = destinationDescriptor(g)
            var (source16, destination16) = (sourceDescriptor(g, dnnl_f32, dnnl_nChw16c), destinationDescriptor(g, dnnl_f32, dnnl_nChw16c))
            var (chosenSource, chosenDestination) = (source, destination)
            /// Whether a chosen layout is NHWC's bytes: NHWC itself, or plain NCHW of one channel.
            func isNHWC(_ chosen: dnnl_memory_desc_t, channels: Int, _ descriptor: (dnnl_format_tag_t) -> dnnl_memory_desc_t) -> Bool {
                var (chosen, nhwc, nchw) = (chosen, descriptor(dnnl_nhwc), descriptor(dnnl_nchw))
                return dnnl_memory_desc_equal(&chosen, &nhwc) != 0 || (channels == 1 && dnnl_memory_desc_equal(&chosen, &nchw) != 0)
            }
            blocked = BlockedActivations(
                source: source, destination: destination,
                sourceReorder: pass == .backwardData
                    ? reorderPrimitive(from: source, to: nhwcSource, "blocked -> NHWC input-gradient reorder")
                    : reorderPrimitive(from: nhwcSource, to: source, "NHWC -> blocked input reorder"),
                destinationReorder: pass.isForward
                    ? reorderPrimitive(from: destination, to: nhwcDestination, "blocked -> NHWC output reorder")
                    : reorderPrimitive(from: nhwcDestination, to: destination, "NHWC -> blocked output-gradient reorder"),
                sourceIsBlocked16: g.inputChannels % 16 == 0 && dnnl_memory_desc_equal(&chosenSource, &source16) != 0,
                destinationIsBlocked16: g.outputChannels % 16 == 0 && dnnl_memory_desc_equal(&chosenDestination, &destination16) != 0,
                sourceIsNHWC: isNHWC(source, channels: g.inputChannels) { sourceDescriptor(g, dnnl_f32, $0) },
                destinationIsNHWC: isNHWC(destination, channels: g.outputChannels) { destinationDescriptor(g, dnnl_f32, $0) })
        }
        let scratchpadBytes = dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(descriptor, dnnl_query_scratchpad_md, 0))
        var name: UnsafePointer<CChar>?
        dnnl_primitive_desc_query(descriptor, dnnl_query_impl_info_str, 0, &name)
        return Prepared(precision: operandType == dnnl_bf16 ? .bf16 : .fp32, primitiveDescriptor: descriptor!, primitive: primitive!,
                        weightsDescriptor: chosen, kerasWeightsDescriptor: keras, weightsReorder: reorder,
                        weightsBytes: dnnl_memory_desc_get_size(&chosen), scratchpadBytes: scratchpadBytes,
                        implementation: (name.map { String(cString: $0) } ?? "?")
                            + (blocked != nil && algorithm == dnnl_convolution_direct ? " (blocked)" : ""),
                        blocked: blocked)
    }

    func reorderPrimitive(from: dnnl_memory_desc_t, to: dnnl_memory_desc_t, _ what: String) -> dnnl_primitive_t {
        var (from, to) = (from, to)
        var reorderDescriptor: dnnl_primitive_desc_t?
        Self.check(dnnl_reorder_primitive_desc_create(&reorderDescriptor, &from, engine, &to, engine, nil), what)
        defer { dnnl_primitive_desc_destroy(reorderDescriptor) }
        var reorder: dnnl_primitive_t?
        Self.check(dnnl_primitive_create(&reorder, reorderDescriptor), "creating a \(what)")
        return reorder!
    }

    func forwardHint(_ g: ConvolutionGeometry, operandType: dnnl_data_type_t, algorithm: dnnl_alg_kind_t,
                             activations: dnnl_format_tag_t) -> dnnl_primitive_desc_t? {
        var d = forwardDescriptor(g, bias: true, operandType: operandType, algorithm: algorithm, activations: activations)
        var hint: dnnl_primitive_desc_t?
        let status = dnnl_primitive_desc_create(&hint, &d, nil, engine, nil)
        if status == dnnl_unimplemented && (operandType == dnnl_bf16 || activations != dnnl_nhwc) { return nil }
        Self.check(status, "forward hint for \(g)")
        return hint!
    }
}
