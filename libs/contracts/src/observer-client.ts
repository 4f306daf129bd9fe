// A client of the exporter's Observer: the three calls, over the TLS, client certificate and token
// of `kappa observe`. The console's server uses it, and so does the exporter's relay, which asks
// the other replicas' Observers for their share (options.scope 'local', a TLS name for peers
// reached by address).
import { Client } from '@grpc/grpc-js';
import type { Metadata } from '@grpc/grpc-js';
import type { ChannelOptions, ClientReadableStream, ServiceError, StatusObject } from '@grpc/grpc-js';
import {
  GetAggregatesRequestSchema,
  GetFlowsRequestSchema,
  GetStatusRequestSchema,
} from './gen/kappa/observer/v1/observer_pb.js';
import type {
  GetAggregatesRequest,
  GetAggregatesResponse,
  GetFlowsRequest,
  GetFlowsResponse,
  GetStatusRequest,
  GetStatusResponse,
} from './gen/kappa/observer/v1/observer_pb.js';
import { create } from '@bufbuild/protobuf';
import { grpcClientSecurity } from './grpc-security.js';
import type { GrpcClientSecurity, SecuredGrpcClient } from './grpc-security.js';
import { observerServiceDefinition } from './grpc.js';

export type FlowsRequestInit = Partial<Pick<GetFlowsRequest, 'sinceNs' | 'untilNs' | 'query' | 'last' | 'limit' | 'follow'>>;
export type AggregatesRequestInit = Partial<Pick<GetAggregatesRequest, 'sinceNs' | 'untilNs' | 'query' | 'level' | 'side' | 'orderBy' | 'limit'>>;

/**
 * The metadata key of a call that wants only the answering exporter's own flows: what the relay
 * sends to the other replicas, so no call is relayed twice.
 */
export const OBSERVER_SCOPE_HEADER = 'kappa-observer-scope';
/** The trailer of a relayed answer some replica could not give: "<instance>: <why>; …". */
export const OBSERVER_MISSING_TRAILER = 'kappa-observer-missing';

/** A unary answer and, for a relayed one, the replicas that did not answer (its trailer). */
export interface ObserverAnswer<T> {
  response: T;
  missing: string | undefined;
}

/** The replicas a relayed answer lacks, from its trailers (or a follower's headers). */
export function missingOf(metadata: Metadata): string | undefined {
  const value = metadata.get(OBSERVER_MISSING_TRAILER)[0];
  return value === undefined || value === '' ? undefined : String(value);
}

export interface ObserverClientOptions {
  /** 'local': the Observer answers with its own flows only (no relay). */
  scope?: 'local';
  /** The name the server's certificate must carry, when it is reached by an address it does not name (a pod IP). */
  tlsName?: string;
  /** Deadline of each unary call. */
  unaryTimeoutMs?: number;
}

export class ObserverClient {
  private readonly client: Client;
  private readonly security: SecuredGrpcClient;

  constructor(
    address: string,
    settings: GrpcClientSecurity,
    private readonly options: ObserverClientOptions = {},
  ) {
    this.security = grpcClientSecurity(settings);
    const channel: ChannelOptions = options.tlsName ? { 'grpc.ssl_target_name_override': options.tlsName, 'grpc.default_authority': options.tlsName } : {};
    this.client = new Client(address, this.security.credentials, channel);
  }

  private metadata(): Metadata {
    const metadata = this.security.metadata();
    if (this.options.scope) metadata.set(OBSERVER_SCOPE_HEADER, this.options.scope);
    return metadata;
  }

  private unary<I, O>(name: 'GetAggregates' | 'GetStatus', request: I): Promise<ObserverAnswer<O>> {
    const method = observerServiceDefinition[name]!;
    return new Promise((resolve, reject) => {
      let value: O | undefined;
      // The callback comes before the status, which carries the trailers: answer on the status.
      const call = this.client.makeUnaryRequest<I, O>(
        method.path,
        method.requestSerialize as (value: I) => Buffer,
        method.responseDeserialize as (bytes: Buffer) => O,
        request,
        this.metadata(),
        { deadline: Date.now() + (this.options.unaryTimeoutMs ?? 30_000) },
        (error: ServiceError | null, answer?: O) => {
          if (error || answer === undefined) reject(error);
          else value = answer;
        },
      );
      call.on('status', (status: StatusObject) => {
        if (value !== undefined) resolve({ response: value, missing: missingOf(status.metadata) });
      });
    });
  }

  aggregates(init: AggregatesRequestInit | GetAggregatesRequest): Promise<ObserverAnswer<GetAggregatesResponse>> {
    return this.unary('GetAggregates', create(GetAggregatesRequestSchema, init));
  }

  status(): Promise<ObserverAnswer<GetStatusResponse>> {
    return this.unary<GetStatusRequest, GetStatusResponse>('GetStatus', create(GetStatusRequestSchema, {}));
  }

  /** A stream of flows; the caller reads 'data', 'error', 'end' and may cancel(). */
  flows(init: FlowsRequestInit | GetFlowsRequest): ClientReadableStream<GetFlowsResponse> {
    const method = observerServiceDefinition.GetFlows!;
    return this.client.makeServerStreamRequest<GetFlowsRequest, GetFlowsResponse>(
      method.path,
      method.requestSerialize as (value: GetFlowsRequest) => Buffer,
      method.responseDeserialize as (bytes: Buffer) => GetFlowsResponse,
      create(GetFlowsRequestSchema, init),
      this.metadata(),
    );
  }

  close(): void {
    this.client.close();
  }
}
