import java.util.ArrayList;
public class Main {
    public static void main(String[] args) {
        ArrayList<long[]> keep = new ArrayList<>();
        for (int i = 0; i < 100000; i++) keep.add(new long[1 << 20]);
        System.out.println(keep.size());
    }
}
