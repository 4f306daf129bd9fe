// The console's client of the exporter's Observer: the three calls the pages need, over the same
// TLS, client certificate and token as `kappa observe`.
import { Client } from '@grpc/grpc-js';
import type { ClientReadableStream, ServiceError } from '@grpc/grpc-js';
import {
  GetAggregatesRequestSchema,
  GetFlowsRequestSchema,
  GetStatusRequestSchema,
  create,
  grpcClientSecurity,
  observerServiceDefinition,
} from '@kappa/contracts';
import type {
  GetAggregatesRequest,
  GetAggregatesResponse,
  GetFlowsRequest,
  GetFlowsResponse,
  GetStatusRequest,
  GetStatusResponse,
  GrpcClientSecurity,
  SecuredGrpcClient,
} from '@kappa/contracts';

export type FlowsRequestInit = Partial<Pick<GetFlowsRequest, 'sinceNs' | 'untilNs' | 'query' | 'last' | 'limit' | 'follow'>>;
export type AggregatesRequestInit = Partial<Pick<GetAggregatesRequest, 'sinceNs' | 'untilNs' | 'query' | 'level' | 'side' | 'orderBy' | 'limit'>>;

export class ObserverClient {
  private readonly client: Client;
  private readonly security: SecuredGrpcClient;

  constructor(address: string, settings: GrpcClientSecurity) {
    this.security = grpcClientSecurity(settings);
    this.client = new Client(address, this.security.credentials);
  }

  private unary<I, O>(name: 'GetAggregates' | 'GetStatus', request: I): Promise<O> {
    const method = observerServiceDefinition[name]!;
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest<I, O>(
        method.path,
        method.requestSerialize as (value: I) => Buffer,
        method.responseDeserialize as (bytes: Buffer) => O,
        request,
        this.security.metadata(),
        { deadline: Date.now() + 30_000 },
        (error: ServiceError | null, value?: O) => (error || value === undefined ? reject(error) : resolve(value)),
      );
    });
  }

  aggregates(init: AggregatesRequestInit): Promise<GetAggregatesResponse> {
    return this.unary('GetAggregates', create(GetAggregatesRequestSchema, init));
  }

  status(): Promise<GetStatusResponse> {
    return this.unary<GetStatusRequest, GetStatusResponse>('GetStatus', create(GetStatusRequestSchema, {}));
  }

  /** A stream of flows; the caller reads 'data', 'error', 'end' and may cancel(). */
  flows(init: FlowsRequestInit): ClientReadableStream<GetFlowsResponse> {
    const method = observerServiceDefinition.GetFlows!;
    return this.client.makeServerStreamRequest<GetFlowsRequest, GetFlowsResponse>(
      method.path,
      method.requestSerialize as (value: GetFlowsRequest) => Buffer,
      method.responseDeserialize as (bytes: Buffer) => GetFlowsResponse,
      create(GetFlowsRequestSchema, init),
      this.security.metadata(),
    );
  }

  close(): void {
    this.client.close();
  }
}
