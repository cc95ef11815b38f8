package adclick.flink;

import java.util.List;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.dag.Transformation;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.table.data.RowData;
import org.apache.flink.util.Collector;

/** What the tests of the compact operators' install build translated graphs from. */
final class InstallFixtures {

  private InstallFixtures() {}

  /** A keyed function that is none of the planner's: install must refuse to replace it. */
  static final class PassThrough extends KeyedProcessFunction<RowData, RowData, RowData> {
    private static final long serialVersionUID = 1L;

    @Override
    public void processElement(RowData row, Context context, Collector<RowData> out) {
      out.collect(row);
    }
  }

  /** A leaf of the graph (an input of the transformation under test); never run. */
  static final class FakeSource extends Transformation<RowData> {
    FakeSource(String name, TypeInformation<RowData> type) {
      super(name, type, 2);
    }

    @Override
    protected List<Transformation<?>> getTransitivePredecessorsInternal() {
      return List.of(this);
    }

    @Override
    public List<Transformation<?>> getInputs() {
      return List.of();
    }
  }
}
