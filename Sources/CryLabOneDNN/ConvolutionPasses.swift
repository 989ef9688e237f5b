import CDNNL
import CryLabTensor
import Foundation

extension DNNLConvolution {
    // MARK: Passes

    public func forward(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, kernel: UnsafePointer<Float>,
                        bias: UnsafePointer<Float>?, fuseReLU: Bool, output: UnsafeMutablePointer<Float>) {
        _ = forward(g, input: input, kernel: kernel, bias: bias, fuseReLU: fuseReLU, output: output, keepingRoundedInput: false)
    }

    /// In bf16 with `keepingRoundedInput`, the input's bf16 copy is made in memory of its own and
    /// returned, for `backward(roundedInput:)` to reuse instead of rounding the input again.
    public func forward(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, kernel: UnsafePointer<Float>,
                        bias: UnsafePointer<Float>?, fuseReLU: Bool, output: UnsafeMutablePointer<Float>,
                        keepingRoundedInput: Bool) -> BFloat16Copy? {
        forward(g, input: input, inputLayout: .nhwc, kernel: kernel, bias: bias, fuseReLU: fuseReLU, output: output,
                allowingBlockedOutput: false, keepingRoundedInput: keepingRoundedInput).rounded
    }

    /// `input` in `inputLayout`. With `allowingBlockedOutput`, a blocked forward pass that writes
    /// nChw16c writes `output` in that layout, sparing its reorder to NHWC; the layout written is
    /// returned. A blocked input is read in place by such a pass, and reordered to NHWC for others.
    public func forward(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, inputLayout: ActivationLayout,
                        kernel: UnsafePointer<Float>, bias: UnsafePointer<Float>?, fuseReLU: Bool,
                        output: UnsafeMutablePointer<Float>, allowingBlockedOutput: Bool,
                        keepingRoundedInput: Bool) -> (layout: ActivationLayout, rounded: BFloat16Copy?) {
        lock.withLock {
            let p = prepared(g, .forward(bias: bias != nil, relu: fuseReLU),
                             timingOn: (UnsafeMutableRawPointer(mutating: input), UnsafeMutableRawPointer(output)))
            let weights = kernelInKernelLayout(p, kernel: kernel)
            let sourceInPlace = inputLayout == .blocked16 && p.blocked?.sourceIsBlocked16 == true
            let destinationInPlace = allowingBlockedOutput && p.blocked?.destinationIsBlocked16 == true
            let input = inputLayout == .blocked16 && !sourceInPlace
                ? UnsafePointer(nhwcCopy(of: input, g.inputShape, buffer: \.nhwcInputBuffer)) : input
            var kept: BFloat16Copy?
            let source: UnsafeMutableRawPointer
            if sourceInPlace {
                source = UnsafeMutableRawPointer(mutating: input)
            } else if keepingRoundedInput && p.precision == .bf16 {
                let copy = BFloat16Copy(count: g.inputShape.reduce(1, *))
                convertToBFloat16(input, count: copy.count, into: copy.bytes)
                kept = copy
                source = copy.bytes
            } else {
                source = operand(p, input, count: g.inputShape.reduce(1, *), buffer: \.inputBF16Buffer)
            }
            var unused: BlockedCopy?
            perform(p, .forward(bias: bias != nil, relu: fuseReLU), g, source: source, destination: UnsafeMutableRawPointer(output),
                    weights: weights, bias: bias.map { UnsafeMutableRawPointer(mutating: $0) }, blockedOutputGradient: &unused,
                    sourceInPlace: sourceInPlace, destinationInPlace: destinationInPlace)
            return (destinationInPlace ? .blocked16 : .nhwc, kept)
        }
    }

    public func backwardData(_ g: ConvolutionGeometry, outputGradient: UnsafePointer<Float>,
                             kernel: UnsafePointer<Float>, inputGradient: UnsafeMutablePointer<Float>) {
        lock.withLock {
            var roundedOutputGradient: UnsafeMutableRawPointer?
            var blockedOutputGradient: BlockedCopy?
            backwardDataPass(g, outputGradient: outputGradient, roundedOutputGradient: &roundedOutputGradient,
                             blockedOutputGradient: &blockedOutputGradient, kernel: kernel, inputGradient: inputGradient)
        }
    }

    public func backwardWeights(_ g: ConvolutionGeometry, input: UnsafePointer<Float>,
                                outputGradient: UnsafePointer<Float>,
                                kernelGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>?) {
        lock.withLock {
            var roundedOutputGradient: UnsafeMutableRawPointer?
            var blockedOutputGradient: BlockedCopy?
            backwardWeightsPass(g, input: input, roundedInput: nil, outputGradient: outputGradient,
                                roundedOutputGradient: &roundedOutputGradient, blockedOutputGradient: &blockedOutputGradient,
                                kernelGradient: kernelGradient, biasGradient: biasGradient)
        }
    }

    public func backward(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, outputGradient: UnsafePointer<Float>,
                         kernel: UnsafePointer<Float>, kernelGradient: UnsafeMutablePointer<Float>?,
                         biasGradient: UnsafeMutablePointer<Float>?, inputGradient: UnsafeMutablePointer<Float>?) {
        backward(g, input: input, roundedInput: nil, outputGradient: outputGradient, reluOutput: nil, kernel: kernel,
                 kernelGradient: kernelGradient, biasGradient: biasGradient, inputGradient: inputGradient)
    }

    /// Both backward passes, rounding the output gradient to bf16 once for the two (bf16 only).
    /// `roundedInput`: the copy `forward(keepingRoundedInput:)` returned for this input, if any.
    /// `reluOutput`: if given, the convolution was followed by ReLU with this output, and
    /// `outputGradient` is the gradient of the ReLU's output; when both passes run in bf16 the ReLU
    /// backward and the rounding to bf16 are done in one pass over memory.
    ///
    /// `inputLayout` is the layout of `input`, in which `inputGradient` is written; `outputLayout`
    /// that of `outputGradient` (and `reluOutput`). Blocked operands are used in place by blocked
    /// passes that take nChw16c, and reordered from or to NHWC for the others.
    public func backward(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, inputLayout: ActivationLayout = .nhwc,
                         roundedInput: BFloat16Copy?, outputGradient: UnsafePointer<Float>,
                         outputLayout: ActivationLayout = .nhwc, reluOutput: UnsafePointer<Float>?, kernel: UnsafePointer<Float>,
                         kernelGradient: UnsafeMutablePointer<Float>?, biasGradient: UnsafeMutablePointer<Float>?,
                         inputGradient: UnsafeMutablePointer<Float>?) {
        lock.withLock {
            var roundedOutputGradient: UnsafeMutableRawPointer?
            var blockedOutputGradient: BlockedCopy?
            // Both passes are prepared before either runs: the fast mode's first-call timing runs
            // Winograd candidates through the blocked buffers, which must stay untouched once the
            // first pass has left the blocked output gradient there for the second.
            let gradient = UnsafeMutableRawPointer(mutating: outputGradient)
            let weightsPass = kernelGradient.map { _ in
                prepared(g, .backwardWeights(bias: biasGradient != nil), timingOn: (UnsafeMutableRawPointer(mutating: input), gradient))
            }
            let dataPass = inputGradient.map { prepared(g, .backwardData, timingOn: (UnsafeMutableRawPointer($0), gradient)) }
            var outputGradient = outputGradient
            if let reluOutput {
                let count = g.outputShape.reduce(1, *)
                let allBF16 = [weightsPass, dataPass].allSatisfy { $0 == nil || $0!.precision == .bf16 }
                if allBF16 && outputLayout == .nhwc {
                    let target = outputGradientBF16Buffer.reserve(bytes: count * 2)
                    reluBackwardToBFloat16(gradient: outputGradient, output: reluOutput, count: count, into: target, threads: threads)
                    roundedOutputGradient = target
                } else {
                    let masked = reluGradientBuffer.reserve(bytes: count * 4).assumingMemoryBound(to: Float.self)
                    masked.update(from: outputGradient, count: count)
                    reluBackwardInPlace(gradient: masked, output: reluOutput, count: count, threads: threads)
                    outputGradient = UnsafePointer(masked)
                }
            }
            // Blocked operands: in place where a pass takes nChw16c, else NHWC copies (the output
            // gradient's made once for both passes).
            let blockedGradient = outputLayout == .blocked16
            var nhwcGradient: UnsafePointer<Float>?
            func gradientOperand(for pass: Prepared) -> (pointer: UnsafePointer<Float>, inPlace: Bool) {
                if !blockedGradient { return (outputGradient, false) }
                if pass.blocked?.destinationIsBlocked16 == true { return (outputGradient, true) }
                if nhwcGradient == nil {
                    nhwcGradient = UnsafePointer(nhwcCopy(of: outputGradient, g.outputShape, buffer: \.nhwcOutputGradientBuffer))
                }
                return (nhwcGradient!, false)
            }
            if let kernelGradient, let weightsPass {
                let sourceInPlace = inputLayout == .blocked16 && weightsPass.blocked?.sourceIsBlocked16 == true
                let input = inputLayout == .blocked16 && !sourceInPlace
                    ? UnsafePointer(nhwcCopy(of: input, g.inputShape, buffer: \.nhwcInputBuffer)) : input
                let (dy, destinationInPlace) = gradientOperand(for: weightsPass)
                backwardWeightsPass(g, input: input, roundedInput: roundedInput, outputGradient: dy,
                                    roundedOutputGradient: &roundedOutputGradient, blockedOutputGradient: &blockedOutputGradient,
                                    kernelGradient: kernelGradient, biasGradient: biasGradient,
                                    sourceInPlace: sourceInPlace, destinationInPlace: destinationInPlace)
            }
            if let inputGradient, let dataPass {
                let sourceInPlace = inputLayout == .blocked16 && dataPass.blocked?.sourceIsBlocked16 == true
                let target = inputLayout == .blocked16 && !sourceInPlace
                    ? nhwcInputBuffer.reserve(bytes: g.inputShape.reduce(1, *) * 4).assumingMemoryBound(to: Float.self)
                    : inputGradient
                let (dy, destinationInPlace) = gradientOperand(for: dataPass)
                backwardDataPass(g, outputGradient: dy, roundedOutputGradient: &roundedOutputGradient,
                                 blockedOutputGradient: &blockedOutputGradient, kernel: kernel, inputGradient: target,
                                 sourceInPlace: sourceInPlace, destinationInPlace: destinationInPlace)
                if target != inputGradient { convertLayout(target, g.inputShape, toBlocked: true, into: inputGradient) }
            }
        }
    }

    // MARK: Passes, called with the lock held

    /// `roundedOutputGradient`: the bf16 copy of `outputGradient` if a pass already made it; set when this one does.
    /// `blockedOutputGradient`: likewise its copy in a blocked pass's layout.
    func backwardDataPass(_ g: ConvolutionGeometry, outputGradient: UnsafePointer<Float>,
                                  roundedOutputGradient: inout UnsafeMutableRawPointer?,
                                  blockedOutputGradient: inout BlockedCopy?,
                                  kernel: UnsafePointer<Float>, inputGradient: UnsafeMutablePointer<Float>,
                                  sourceInPlace: Bool = false, destinationInPlace: Bool = false) {
        let p = prepared(g, .backwardData, timingOn: (UnsafeMutableRawPointer(inputGradient), UnsafeMutableRawPointer(mutating: outputGradient)))
        let weights = kernelInKernelLayout(p, kernel: kernel)
        let diffDestination = outputGradientOperand(p, outputGradient, count: g.outputShape.reduce(1, *),
                                                    rounded: &roundedOutputGradient)
        perform(p, .backwardData, g, source: UnsafeMutableRawPointer(inputGradient), destination: diffDestination,
                weights: weights, bias: nil, blockedOutputGradient: &blockedOutputGradient,
                sourceInPlace: sourceInPlace, destinationInPlace: destinationInPlace)
    }

    func backwardWeightsPass(_ g: ConvolutionGeometry, input: UnsafePointer<Float>, roundedInput: BFloat16Copy?,
                                     outputGradient: UnsafePointer<Float>,
                                     roundedOutputGradient: inout UnsafeMutableRawPointer?,
                                     blockedOutputGradient: inout BlockedCopy?,
                                     kernelGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>?,
                                     sourceInPlace: Bool = false, destinationInPlace: Bool = false) {
        do {
            let p = prepared(g, .backwardWeights(bias: biasGradient != nil),
                             timingOn: (UnsafeMutableRawPointer(mutating: input), UnsafeMutableRawPointer(mutating: outputGradient)))
            // oneDNN overwrites its outputs; ours accumulate, so compute into scratch and add.
            let kernelCount = g.kernelHeight * g.kernelWidth * g.inputChannels * g.outputChannels
            let fresh = weightsGradientBuffer.reserve(bytes: (p.weightsBytes + 63) / 64 * 64 + (g.outputChannels + kernelCount) * 4)
            let freshKernel = fresh
            let freshBias = fresh + (p.weightsBytes + 63) / 64 * 64
            let inputCount = g.inputShape.reduce(1, *)
            let source = p.precision == .bf16 && roundedInput?.count == inputCount
                ? roundedInput!.bytes : operand(p, input, count: inputCount, buffer: \.inputBF16Buffer)
            let diffDestination = outputGradientOperand(p, outputGradient, count: g.outputShape.reduce(1, *),
                                                        rounded: &roundedOutputGradient)
            perform(p, .backwardWeights(bias: biasGradient != nil), g, source: source, destination: diffDestination,
                    weights: freshKernel, bias: biasGradient == nil ? nil : freshBias, blockedOutputGradient: &blockedOutputGradient,
                    sourceInPlace: sourceInPlace, destinationInPlace: destinationInPlace)
            var kerasKernel = freshKernel.assumingMemoryBound(to: Float.self)
            if let reorder = p.weightsReorder {
                // Blocked gradient -> Keras layout, into the space after the bias.
                let target = freshBias + g.outputChannels * 4
                runReorder(reorder, from: (p.weightsDescriptor, freshKernel), to: (p.kerasWeightsDescriptor, target))
                kerasKernel = target.assumingMemoryBound(to: Float.self)
            }
            for i in 0..<kernelCount { kernelGradient[i] += kerasKernel[i] }
            if let biasGradient {
                let b = freshBias.assumingMemoryBound(to: Float.self)
                for i in 0..<g.outputChannels { biasGradient[i] += b[i] }
            }
        }
    }

    // MARK: Execution helpers

    func kernelInKernelLayout(_ p: Prepared, kernel: UnsafePointer<Float>) -> UnsafeMutableRawPointer {
        guard let reorder = p.weightsReorder else { return UnsafeMutableRawPointer(mutating: kernel) }
        let target = weightsBuffer.reserve(bytes: p.weightsBytes)
        runReorder(reorder, from: (p.kerasWeightsDescriptor, UnsafeMutableRawPointer(mutating: kernel)),
                   to: (p.weightsDescriptor, target))
        return target
    }

    /// The pointer oneDNN should read an operand from: `values` itself in fp32, else a bf16 copy
    /// in `buffer` (same layout, half the bytes).
    func operand(_ p: Prepared, _ values: UnsafePointer<Float>, count: Int,
                         buffer: ReferenceWritableKeyPath<DNNLConvolution, GrowingBuffer>) -> UnsafeMutableRawPointer {
        guard p.precision == .bf16 else { return UnsafeMutableRawPointer(mutating: values) }
        return convertToBFloat16(values, count: count, buffer: buffer)
    }

    /// `operand` for the output gradient, reusing (or recording) its bf16 copy in `rounded`.
    func outputGradientOperand(_ p: Prepared, _ values: UnsafePointer<Float>, count: Int,
                                       rounded: inout UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer {
        guard p.precision == .bf16 else { return UnsafeMutableRawPointer(mutating: values) }
        if let rounded { return rounded }
        let made = convertToBFloat16(values, count: count, buffer: \.outputGradientBF16Buffer)
        rounded = made
        return made
    }

    /// Runs `p` on NHWC activations (in `p`'s operand type where the pass reads them). `source` is
    /// the input (forward, backward-weights: read) or the input gradient (backward-data: written);
    /// `destination` is the output (forward: written) or the output gradient (backward: read).
    /// `weights` and `bias` are the weights (gradients, for backward-weights) in `p`'s layout.
    /// A blocked pass reorders what it reads into blocked buffers first and what it writes back to
    /// NHWC after, using `blockedOutputGradient` if an earlier pass of the same call made it; an
    /// operand whose blocked layout holds NHWC's bytes (one channel) is used where it lies.
    ///
    /// `sourceInPlace` / `destinationInPlace`: that operand is (or is to be written) in the blocked
    /// pass's own layout, nChw16c (`BlockedActivations.sourceIsBlocked16`), where the pointer says:
    /// no buffer, no reorder.
    func perform(_ p: Prepared, _ pass: Pass, _ g: ConvolutionGeometry,
                         source: UnsafeMutableRawPointer, destination: UnsafeMutableRawPointer,
                         weights: UnsafeMutableRawPointer, bias: UnsafeMutableRawPointer?,
                         blockedOutputGradient: inout BlockedCopy?,
                         sourceInPlace: Bool = false, destinationInPlace: Bool = false) {
        precondition((!sourceInPlace || p.blocked?.sourceIsBlocked16 == true)
                     && (!destinationInPlace || p.blocked?.destinationIsBlocked16 == true),
                     "an operand in place needs a blocked pass that reads and writes nChw16c")
        let nhwcSource = sourceDescriptor(g, pass == .backwardData ? dnnl_f32 : p.operandType)
        let nhwcDestination = destinationDescriptor(g, pass.isForward ? dnnl_f32 : p.operandType)
        var src = (descriptor: nhwcSource, pointer: source), dst = (descriptor: nhwcDestination, pointer: destination)
        if let b = p.blocked {
            if sourceInPlace || b.sourceIsNHWC {
                src = (b.source, source)
            } else {
                src = (b.source, blockedSourceBuffer.reserve(bytes: b.sourceBytes))
                if pass != .backwardData { reorderActivations(b.sourceReorder, from: (nhwcSource, source), to: src) }
            }
            if destinationInPlace || b.destinationIsNHWC {
                dst = (b.destination, destination)
            } else if pass.isForward {
                dst = (b.destination, blockedDestinationBuffer.reserve(bytes: b.destinationBytes))
            } else if let shared = blockedOutputGradient, dnnl_memory_desc_equal([shared.descriptor], [b.destination]) != 0 {
                dst = shared
            } else {
                dst = (b.destination, blockedDestinationBuffer.reserve(bytes: b.destinationBytes))
                reorderActivations(b.destinationReorder, from: (nhwcDestination, destination), to: dst)
                blockedOutputGradient = dst
            }
        }
        var arguments: [dnnl_exec_arg_t]
        switch pass {
        case .forward:
            arguments = [argument(Int32(DNNL_ARG_SRC_0), descriptor: src.descriptor, pointer: src.pointer),
                         argument(Int32(DNNL_ARG_WEIGHTS_0), descriptor: p.weightsDescriptor, pointer: weights),
                         argument(Int32(DNNL_ARG_DST_0), descriptor: dst.descriptor, pointer: dst.pointer)]
            if let bias { arguments.append(argument(41, descriptor: biasDescriptor(g), pointer: bias)) }
        case .backwardData:
            arguments = [argument(Int32(DNNL_ARG_DIFF_DST_0), descriptor: dst.descriptor, pointer: dst.pointer),
                         argument(Int32(DNNL_ARG_WEIGHTS_0), descriptor: p.weightsDescriptor, pointer: weights),
                         argument(Int32(DNNL_ARG_DIFF_SRC_0), descriptor: src.descriptor, pointer: src.pointer)]
        case .backwardWeights:
            arguments = [argument(Int32(DNNL_ARG_SRC_0), descriptor: src.descriptor, pointer: src.pointer),
                         argument(Int32(DNNL_ARG_DIFF_DST_0), descriptor: dst.descriptor, pointer: dst.pointer),
                         argument(Int32(DNNL_ARG_DIFF_WEIGHTS_0), descriptor: p.weightsDescriptor, pointer: weights)]
            if let bias { arguments.append(argument(169, descriptor: biasDescriptor(g), pointer: bias)) }
        }
        execute(p, arguments)
        if let b = p.blocked {
            if pass == .backwardData && !sourceInPlace && !b.sourceIsNHWC {
                reorderActivations(b.sourceReorder, from: src, to: (nhwcSource, source))
            }
            if pass.isForward && !destinationInPlace && !b.destinationIsNHWC {
                reorderActivations(b.destinationReorder, from: dst, to: (nhwcDestination, destination))
            }
        }
    }
}
